"""Small, learnable in-memory datasets for tests (class k brightens a class-specific patch), a
tiny trainer on them, and CIFAR-10 files in torchvision's format (CIFAR-10 itself cannot be
fetched here).

    python tests/synthetic.py --cifar10 DIR [--per-batch N]   (used by scripts/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecab_tune.config import TrainConfig
from ecab_tune.data import DataInfo, Split, Splits
from ecab_tune.engine import Trainer, make_trainer
from ecab_tune.models import ModelConfig

TINY = ModelConfig(
    "resnet8",
    "ecab",
    {"layers": "last2", "fusion": "concat"},
    width=0.25,
    num_classes=4,
    in_chans=1,
)


def make_split(n: int, classes: int, channels: int, size: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 60, (n, channels, size, size), generator=g, dtype=torch.uint8)
    patch = size // classes
    for k in range(classes):
        rows = slice(k * patch, (k + 1) * patch)
        images[labels == k, :, rows, :] += 150
    return Split(images, labels)


def make_splits(
    n_train: int = 256,
    n_test: int = 64,
    classes: int = 4,
    channels: int = 1,
    size: int = 16,
    val: bool = True,
) -> Splits:
    info = DataInfo(
        name="synthetic",
        classes=tuple(f"class{k}" for k in range(classes)),
        channels=channels,
        height=size,
        width=size,
        mean=(0.3,) * channels,
        std=(0.3,) * channels,
        crop_padding=1,
        flip=True,
    )
    return Splits(
        train=make_split(n_train, classes, channels, size, 0),
        val=make_split(n_test, classes, channels, size, 1) if val else None,
        test=make_split(n_test, classes, channels, size, 2),
        info=info,
    )


def tiny_trainer(epochs: int = 2, **kw: Any) -> Trainer:
    """A CPU trainer of `TINY` on `make_splits()`; `kw` are further `TrainConfig` fields."""
    cfg = TrainConfig(epochs=epochs, batch_size=32, lr=0.05, warmup_epochs=0.5, **kw)
    return make_trainer(TINY, make_splits(), cfg, torch.device("cpu"))


def write_cifar10(root: Path, per_batch: int = 10, n_test: int = 20) -> dict[str, np.ndarray]:
    """torchvision's CIFAR-10 folder: Python-2-style bytes keys, protocol-2 pickles."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(10)
    written: dict[str, np.ndarray] = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(n)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[name] = data
    meta = {b"label_names": [f"class{k}" for k in range(10)], b"num_cases_per_batch": per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="write CIFAR-10-format files of random images")
    parser.add_argument("--cifar10", type=Path, required=True, help="folder to write into")
    parser.add_argument("--per-batch", type=int, default=400, help="images per training batch")
    args = parser.parse_args()
    write_cifar10(args.cifar10, args.per_batch, n_test=args.per_batch)
