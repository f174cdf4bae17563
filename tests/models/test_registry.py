"""Models and attention gates by name, their options, and `ModelConfig` (`models.registry`)."""

from __future__ import annotations

import json

import pytest
import torch

from ecab_tune.models import (
    ModelConfig,
    capture_attention,
    create_model,
    list_attentions,
    list_models,
    model_params,
    resolved_options,
)

from .support import count, gates


@pytest.mark.parametrize("attention", list_attentions())
@pytest.mark.parametrize("name", list_models())
def test_every_model_and_attention_builds_and_runs(name, attention):
    # Train mode: batch statistics keep a random deep net's activations (and gates) unsaturated.
    model = create_model(name, attention, width=0.25, num_classes=7, in_chans=1).train()
    with torch.no_grad(), capture_attention(model) as captured:
        out = model(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    expected = {} if attention in ("none", "ecab_head") else gates(model)
    assert set(captured) == set(expected)
    for name_, outputs in captured.items():
        channels = outputs["channel"]
        assert channels.shape[0] == 2 and channels.shape[1] > 0
        assert ((channels > 0) & (channels < 1)).all(), name_  # sigmoid gates
        if attention == "cbam":
            assert outputs["spatial"].ndim == 3


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"fusion": "sum", "project": False, "layers": "last2"}, "needs equal widths"),
        ({"layers": [-99]}, "reaches before the stem"),
        ({"layers": "last0"}, "layers='last0' is invalid"),
        ({"layers": "last02"}, "layers='last02' is invalid"),  # one spelling per option
        ({"layers": "last\u0662"}, "is invalid"),  # an Arabic-Indic 2: int() reads it
        ({"layers": [1, 2]}, "is invalid"),
        ({"fusion": "mean"}, "fusion='mean' is invalid"),
        ({"reduction": 0}, "reduction=0 is invalid"),
        ({"kernel": 3}, "takes no option 'kernel'"),
    ],
)
def test_invalid_combinations_are_clear_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_model("resnet20", "ecab", **kwargs)


def test_unknown_names_and_bridge_options():
    with pytest.raises(ValueError, match=r"unknown model 'resnet21'.*resnet20"):
        create_model("resnet21")
    with pytest.raises(ValueError, match="unknown attention 'sk'"):
        create_model("resnet20", "sk")
    with pytest.raises(ValueError, match="'bridge' takes no option 'fusion'"):
        create_model("resnet20", "bridge", fusion="concat")
    assert model_params("resnet20", "bridge") == {
        "num_classes",
        "in_chans",
        "width",
        "reduction",
        "min_width",
    }
    assert {"layers", "fusion", "project"} <= model_params("resnet20", "ecab")


def test_model_config_round_trips_through_json():
    cfg = ModelConfig("resnet8", "ecab", {"layers": [-1, -2], "fusion": "sum"}, 0.5, 4, 1)
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert count(again.build()) == count(cfg.build())
    with pytest.raises(ValueError, match="unknown model config key"):
        ModelConfig.from_dict({**cfg.to_dict(), "depth": 3})


def test_resolved_options_spell_out_every_default():
    assert resolved_options("ecab", {"fusion": "sum"}) == {
        "layers": "last2", "fusion": "sum", "reduction": 16, "project": True, "min_width": 8
    }  # fmt: skip
    assert resolved_options("bridge", {})["layers"] == "block"
    assert resolved_options("none", {}) == {}


def test_model_config_refuses_an_option_its_attention_lacks_in_one_line():
    with pytest.raises(ValueError, match="'se' takes no option 'fusion'; it takes: min_width, red"):
        ModelConfig("resnet8", "se", {"fusion": "sum"})
    with pytest.raises(ValueError, match="'none' takes no option 'layers'; it takes: none"):
        ModelConfig.from_dict({"name": "resnet8", "attention_kwargs": {"layers": "all"}})
