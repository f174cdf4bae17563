"""Batches from device-resident uint8 images: batched crop/flip and the one normalisation.

Random numbers are drawn on the CPU from the caller's generator and then moved to the data's
device, so an epoch is identical on CPU and CUDA and reproducible from the seed.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ecab_tune.data.info import DataInfo, Split


def preprocess(images: Tensor, info: DataInfo) -> Tensor:
    """uint8 N×C×H×W → float32 `(x/255 - mean) / std`, on the images' device."""
    if images.shape[1] != info.channels:
        raise ValueError(f"images have {images.shape[1]} channels, the data {info.channels}")
    x = images.float().div_(255)
    # Scalars per channel, not a mean/std tensor: building one on CUDA is a host→device copy
    # that waits for every queued kernel.
    for c, (mean, std) in enumerate(zip(info.mean, info.std, strict=True)):
        x[:, c].sub_(mean).div_(std)
    return x


def batch_crop(images: Tensor, padding: int, offsets: Tensor) -> Tensor:
    """Crop each zero-padded image back to its size at its (dy, dx) in `offsets` (N×2, 0..2p)."""
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)  # N×H
    cols = offsets[:, 1, None] + torch.arange(w, device=images.device)  # N×W
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def batch_flip(images: Tensor, flip: Tensor) -> Tensor:
    """Mirror left-right the images whose entry in the boolean `flip` (N) is set."""
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def iterate_batches(
    split: Split,
    info: DataInfo,
    batch_size: int,
    *,
    train: bool,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (normalised float images, labels) on the split's device.

    train=True: a random order from `generator`, full batches only (the last partial one is
    dropped), random crop and flip. train=False: every image in order, no augmentation.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is invalid: expected >= 1")
    n, device = len(split), split.images.device
    if train:
        steps = n // batch_size
        # The whole epoch's draws happen at its first batch: the generator's state afterwards
        # does not depend on how many batches the caller consumed.
        order = torch.randperm(n, generator=generator)[: steps * batch_size]
        offsets = torch.randint(
            0, 2 * info.crop_padding + 1, (steps * batch_size, 2), generator=generator
        )
        flips = torch.rand(steps * batch_size, generator=generator) < 0.5
        order, offsets, flips = order.to(device), offsets.to(device), flips.to(device)
        starts = range(0, steps * batch_size, batch_size)
    else:
        starts = range(0, n, batch_size)
    for start in starts:
        batch = slice(start, start + batch_size)
        if train:
            images, labels = split.images[order[batch]], split.labels[order[batch]]
            if info.crop_padding:
                images = batch_crop(images, info.crop_padding, offsets[batch])
            if info.flip:
                images = batch_flip(images, flips[batch])
        else:
            images, labels = split.images[batch], split.labels[batch]
        x = preprocess(images, info)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, labels
