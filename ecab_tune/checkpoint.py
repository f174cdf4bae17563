"""The one checkpoint format: safetensors weights + JSON metadata (+ optional resume state).

Nothing here unpickles arbitrary objects: weights are safetensors, metadata is JSON, and the
resume state is read with `torch.load(weights_only=True)`, which only rebuilds tensors and
plain containers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ecab_tune.config import TrainConfig, from_dict, to_dict
from ecab_tune.data import DataInfo
from ecab_tune.models import ModelConfig

FORMAT = "ecab_tune.checkpoint/1"
WEIGHTS, META, STATE = "model.safetensors", "meta.json", "train_state.pt"


class CheckpointError(ValueError):
    """A checkpoint folder that is missing, malformed or does not match its own metadata."""


@dataclass(frozen=True)
class Meta:
    """What a checkpoint says about itself: enough to rebuild, preprocess and describe the model."""

    model: ModelConfig
    data: DataInfo
    train: TrainConfig | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model.to_dict(),
            "data": self.data.to_dict(),
            "train": None if self.train is None else to_dict(self.train),
            "metrics": self.metrics,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Meta:
        if not isinstance(raw, dict):
            raise TypeError(f"expected a JSON object, got {type(raw).__name__}")
        if raw.get("format") != FORMAT:
            raise ValueError(f"format is {raw.get('format')!r}, expected {FORMAT!r}")
        train = raw.get("train")
        meta = cls(
            model=ModelConfig.from_dict(raw["model"]),
            data=DataInfo.from_dict(raw["data"]),
            train=None if train is None else from_dict(TrainConfig, _upgrade_train(train)),
            metrics=dict(raw.get("metrics") or {}),
            extra=dict(raw.get("extra") or {}),
        )
        # The model's output and input must be the data's, or predictions get wrong labels.
        if len(meta.data.classes) != meta.model.num_classes:
            raise ValueError(
                f"data.classes names {len(meta.data.classes)} classes, "
                f"model.num_classes is {meta.model.num_classes}"
            )
        if meta.data.channels != meta.model.in_chans:
            raise ValueError(
                f"data.channels is {meta.data.channels}, model.in_chans {meta.model.in_chans}"
            )
        return meta


def _upgrade_train(train: dict[str, Any]) -> dict[str, Any]:
    """Recipes saved before `precision` replaced the `amp` switch still load."""
    if "amp" not in train:
        return train
    train = dict(train)
    amp = train.pop("amp")
    train.setdefault("precision", "auto" if amp else "fp32")
    return train


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write via a temporary file and rename: a crash or a failed write leaves the old file (or
    none), never a half-written one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save(
    folder: str | Path, model: nn.Module, meta: Meta, train_state: dict[str, Any] | None = None
) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # safetensors wants dense, contiguous CPU tensors (channels_last weights are not).
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # Overwriting: unmark first, so a save killed half-way never pairs new weights with an
    # older resume state (the folder then simply holds no checkpoint).
    (folder / META).unlink(missing_ok=True)
    write_atomic(folder / WEIGHTS, lambda p: save_file(weights, str(p)))
    if train_state is not None:
        write_atomic(folder / STATE, lambda p: torch.save(train_state, p))
    # Metadata last: its presence marks a complete checkpoint.
    write_atomic(folder / META, lambda p: p.write_text(json.dumps(meta.to_dict(), indent=2)))
    return folder


def read_meta(folder: str | Path) -> Meta:
    path = Path(folder) / META
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a checkpoint: {META} is missing")
    try:
        return Meta.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is malformed: {exc}") from exc


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Meta]:
    """Rebuild the model a checkpoint describes and load its weights strictly."""
    meta = read_meta(folder)
    path = Path(folder) / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS}")
    try:
        weights = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from exc
    # A model with NaN or infinite weights loads and runs, and answers NaN: refuse it here.
    bad = [k for k, t in weights.items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise CheckpointError(f"{path}: {bad[0]} holds NaN or infinite values (a diverged model?)")
    try:
        model = meta.model.build()  # option values (fusion, layers, width) are checked here
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder}/{META} describes no buildable model: {exc}") from exc
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match the model in {META}: {exc}") from exc
    return model.to(device).eval(), meta


def load_train_state(folder: str | Path) -> dict[str, Any] | None:
    """The resume state, or None when the checkpoint has none."""
    path = Path(folder) / STATE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling refusal or corruption is the same user error
        raise CheckpointError(f"{path} cannot be loaded safely: {exc}") from exc
