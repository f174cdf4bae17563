"""Checkpoint writes: what a save killed half-way leaves behind."""

from __future__ import annotations

import pytest
import torch
from synthetic import make_splits

from ecab_tune import checkpoint
from ecab_tune.config import TrainConfig
from ecab_tune.engine import make_trainer, save_trainer
from ecab_tune.models import ModelConfig

TINY = ModelConfig("resnet8", "se", width=0.25, num_classes=4, in_chans=1)


def test_a_save_killed_after_the_weights_leaves_no_checkpoint(tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=2, batch_size=32, warmup_epochs=0.5)
    trainer = make_trainer(TINY, make_splits(), cfg, torch.device("cpu"))
    trainer.fit(lambda result: True)  # one epoch
    save_trainer(tmp_path, trainer, TINY)
    assert checkpoint.read_meta(tmp_path).train == cfg

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", killed)  # dies between weights and state
    with pytest.raises(KeyboardInterrupt):
        save_trainer(tmp_path, trainer, TINY)
    # New weights beside the old resume state must not pass for a checkpoint.
    with pytest.raises(checkpoint.CheckpointError, match="is not a checkpoint"):
        checkpoint.read_meta(tmp_path)
