"""The CUDA-graph training step where no GPU is needed: its configuration and its CPU no-op.
What it computes on a GPU is checked in tests/test_cuda.py (marked `cuda`)."""

from __future__ import annotations

import pytest
import torch
from synthetic import make_splits

from ecab_tune.config import TrainConfig
from ecab_tune.engine import make_trainer
from ecab_tune.models import ModelConfig

TINY = ModelConfig("resnet8", "ecab", {"layers": "last2"}, width=0.5, num_classes=4, in_chans=1)


def test_cuda_graphs_and_compile_are_refused_together():
    with pytest.raises(
        ValueError, match="cuda_graphs=True is invalid: expected False with compile"
    ):
        TrainConfig(cuda_graphs=True, compile=True)


def test_on_a_cpu_cuda_graphs_change_nothing():
    runs = []
    for graphs in (False, True):
        cfg = TrainConfig(epochs=1, batch_size=32, warmup_epochs=0.5, cuda_graphs=graphs)
        trainer = make_trainer(TINY, make_splits(), cfg, torch.device("cpu"))
        assert not trainer.cuda_graphs
        trainer.fit()
        assert trainer.graphed is None
        runs.append(trainer)
    for a, b in zip(*(t.model.state_dict().values() for t in runs), strict=True):
        assert torch.equal(a, b)
    assert runs[0].history[0].lr == runs[1].history[0].lr > 0
