"""The CIFAR ResNets (`models.resnet`): where the gates sit, and a deterministic forward."""

from __future__ import annotations

import pytest
import torch

from ecab_tune.models import create_model

from .support import gates


def test_gate_names_are_stable_paths_into_the_model():
    model = create_model("resnet20", "se")
    names = list(gates(model))
    assert names[0] == "stage1.block0.attn" and names[-1] == "stage3.block2.attn"
    assert len(names) == 9
    assert all(model.get_submodule(n) is m for n, m in gates(model).items())


def test_eval_forward_is_deterministic():
    model = create_model("resnet20", "ecab", layers="all", width=0.5).eval()
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"width": True}, "width=True is invalid"),
        ({"width": float("nan")}, "width=nan is invalid"),
        ({"num_classes": 10.0}, "num_classes=10.0"),
        ({"num_classes": True}, "num_classes=True"),
        ({"in_chans": "3"}, "in_chans='3'"),
    ],
)
def test_bad_network_arguments_are_clear_value_errors(kwargs, message):
    # width=True built a width-1 network; a float class count was a TypeError from nn.Linear.
    with pytest.raises(ValueError, match=message):
        create_model("resnet8", "none", **kwargs)
