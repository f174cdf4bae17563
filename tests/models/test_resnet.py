"""The CIFAR ResNets (`models.resnet`): where the gates sit, and a deterministic forward."""

from __future__ import annotations

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
