"""The gates of `models.attention` and how their weights are captured."""

from __future__ import annotations

import pytest
import torch

from ecab_tune.models import capture_attention, create_model

from .support import count, gates


def test_capture_costs_nothing_outside_a_capture_block():
    model = create_model("resnet8", "cbam", width=0.25).eval()
    with capture_attention(model) as captured:
        model(torch.randn(1, 3, 8, 8))
    first = {n: o["channel"].clone() for n, o in captured.items()}
    model(torch.randn(1, 3, 8, 8))  # outside: nothing is recorded or overwritten
    assert all(m._sink is None for m in gates(model).values())
    assert all(torch.equal(first[n], o["channel"]) for n, o in captured.items())


def test_se_parameter_overhead_on_resnet50_matches_the_paper():
    # Hu et al., Table 2: ResNet-50 25.56M → SE-ResNet-50 28.09M parameters (r = 16).
    # The gates are the same on CIFAR's ResNet-50; only the 1000-way classifier differs.
    added = count(create_model("resnet50", "se")) - count(create_model("resnet50", "none"))
    assert added == pytest.approx(28.09e6 - 25.56e6, rel=0.03)


def test_min_width_sets_the_gate_floor():
    assert create_model("resnet20", "se").get_submodule("stage1.block0.attn").fc1.out_features == 8
    paper = create_model("resnet20", "se", min_width=1)
    assert paper.get_submodule("stage1.block0.attn").fc1.out_features == 1  # 16 // 16
    assert paper.get_submodule("stage3.block0.attn").fc1.out_features == 4  # 64 // 16
    with pytest.raises(ValueError, match="min_width=0 is invalid"):
        create_model("resnet8", "ecab", min_width=0)
    with pytest.raises(ValueError, match="takes no option 'layers'"):
        create_model("resnet8", "bav2", layers="all")


@pytest.mark.parametrize(
    "attention,options,message",
    [
        ("cbam", {"kernel_size": 7.0}, "kernel_size=7.0 is invalid"),
        ("cbam", {"kernel_size": "7"}, "kernel_size='7' is invalid"),
        ("eca", {"gamma": "2"}, "gamma='2' is invalid"),
        ("eca", {"gamma": True}, "gamma=True is invalid"),
        ("eca", {"gamma": float("nan")}, "gamma=nan is invalid"),
        ("eca", {"beta": "x"}, "beta='x' is invalid"),
        ("eca", {"beta": float("inf")}, "beta=inf is invalid"),
        ("eca", {"beta": False}, "beta=False is invalid"),
    ],
)
def test_bad_gate_option_values_are_clear_value_errors(attention, options, message):
    # A value of the wrong type was a TypeError from deep inside torch (or built as 1 from a
    # bool), which the train CLI, catching ValueError, showed as a traceback.
    with pytest.raises(ValueError, match=message):
        create_model("resnet8", attention, width=0.25, **options)
