"""Small, learnable in-memory datasets for tests: class k brightens a class-specific patch."""

from __future__ import annotations

import torch

from ecab_tune.data import DataInfo, Split, Splits


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
