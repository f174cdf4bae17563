"""One run around the engine: build or resume a `Trainer`, save it, summarise it.

The CLI trainer, the search's trials and the study's runs all go through these, so there is one
way to build, resume and save a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ecab_tune import checkpoint
from ecab_tune.config import TrainConfig
from ecab_tune.data import Splits
from ecab_tune.engine import FitResult, Trainer
from ecab_tune.models import ModelConfig


def make_trainer(
    model_cfg: ModelConfig,
    splits: Splits,
    train_cfg: TrainConfig,
    device: torch.device,
    resume_from: str | Path | None = None,
) -> Trainer:
    """A seeded trainer; restored exactly (weights, optimiser, data order) from `resume_from`."""
    if resume_from is not None:
        model, _ = checkpoint.load_model(resume_from)
        state = checkpoint.load_train_state(resume_from)
        if state is None:
            raise checkpoint.CheckpointError(f"{resume_from} has no resume state")
    else:
        model, state = model_cfg.build(seed=train_cfg.seed), None
    trainer = Trainer(model, splits, train_cfg, device)
    if state is not None:
        trainer.load_state_dict(state)
    return trainer


def run_metrics(trainer: Trainer, fit: FitResult) -> dict[str, Any]:
    """Summary metrics of a run; the test split is evaluated here, once, at the end."""
    last = trainer.history[-1] if trainer.history else None
    test_loss, test_acc = trainer.evaluate(trainer.splits.test)
    return {
        "status": fit.status,
        "epochs": trainer.epoch,
        "val_acc": last.val_acc if last else None,
        "val_loss": last.val_loss if last else None,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "images_per_s": last.images_per_s if last else None,
        "params": sum(p.numel() for p in trainer.model.parameters()),
    }


def save_trainer(
    folder: str | Path,
    trainer: Trainer,
    model_cfg: ModelConfig,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A checkpoint of the trainer's model and everything an exact resume needs."""
    meta = checkpoint.Meta(model_cfg, trainer.splits.info, trainer.cfg, metrics or {}, extra or {})
    return checkpoint.save(folder, trainer.model, meta, trainer.state_dict())
