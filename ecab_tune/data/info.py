"""What a dataset is (`DataInfo`) and the tensors that hold it (`Split`, `Splits`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ecab_tune.config import from_dict, is_int, is_real


class DatasetNotFoundError(Exception):
    """The dataset is not on disk (and was not, or could not be, downloaded)."""


@dataclass(frozen=True)
class DataInfo:
    """Everything a model's input depends on: shape, class names, normalisation, augmentation.

    Saved with every checkpoint, so the service preprocesses exactly as training did.
    """

    name: str
    classes: tuple[str, ...]
    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool

    def __post_init__(self) -> None:
        _expect(isinstance(self.name, str), "name", self.name, "a string")
        _expect(
            isinstance(self.classes, tuple)
            and len(self.classes) > 0
            and all(isinstance(c, str) for c in self.classes),
            "classes",
            self.classes,
            "a non-empty tuple of strings",
        )
        _expect(
            is_int(self.channels) and self.channels in (1, 3), "channels", self.channels, "1 or 3"
        )
        for key in ("height", "width"):
            value = getattr(self, key)
            _expect(is_int(value) and value > 0, key, value, "a positive integer")
        for key in ("mean", "std"):
            value = getattr(self, key)
            _expect(
                isinstance(value, tuple)
                and len(value) == self.channels
                and all(is_real(v) for v in value),
                key,
                value,
                f"a tuple of {self.channels} finite numbers (one per channel)",
            )
        _expect(all(s > 0 for s in self.std), "std", self.std, "positive values")
        _expect(
            is_int(self.crop_padding) and self.crop_padding >= 0,
            "crop_padding",
            self.crop_padding,
            "an integer >= 0",
        )
        _expect(isinstance(self.flip, bool), "flip", self.flip, "true or false")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples as lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DataInfo:
        """Inverse of `to_dict`: KeyError for a missing key, TypeError/ValueError for a bad one."""
        return from_dict(cls, raw, what="data info")


def _expect(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ValueError(f"data info {key}={value!r} is invalid: expected {allowed}")


@dataclass(frozen=True)
class Split:
    """Images as uint8 N×C×H×W and labels as int64 N, on one device."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 N×C×H×W, got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"labels must be int64 of length {len(self.images)}, "
                f"got {self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def select(self, indices: Tensor) -> Split:
        """The images at `indices`, in that order."""
        return Split(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class Splits:
    """A dataset ready to train on; `val` is held out of the official train split (or None)."""

    train: Split
    val: Split | None
    test: Split
    info: DataInfo

    def to(self, device: torch.device | str) -> Splits:
        return Splits(
            self.train.to(device),
            None if self.val is None else self.val.to(device),
            self.test.to(device),
            self.info,
        )
