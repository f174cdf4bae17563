"""Stratified draws: the one helper behind subsets, validation and test hold-outs."""

from __future__ import annotations

import torch
from torch import Tensor


def stratified_split(labels: Tensor, count: int, seed: int) -> tuple[Tensor, Tensor]:
    """Indices of `count` items drawn at random per class in proportion to the class's size,
    and indices of the rest; both sorted, both deterministic under `seed`.
    """
    n = len(labels)
    if not 0 <= count <= n:
        raise ValueError(f"cannot draw {count} of {n} items")
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    classes, sizes = torch.unique(labels, return_counts=True)
    exact = sizes.double() * count / n
    quota = exact.floor().long()
    # Largest remainders take the leftover draws, so the quotas sum to exactly `count`.
    leftover = count - int(quota.sum())
    quota[torch.argsort(exact - quota, descending=True, stable=True)[:leftover]] += 1
    drawn = []
    for label, k in zip(classes.tolist(), quota.tolist(), strict=True):
        members = torch.nonzero(labels == label).squeeze(1)
        drawn.append(members[torch.randperm(len(members), generator=generator)[:k]])
    chosen = torch.cat(drawn).sort().values
    rest = torch.ones(n, dtype=torch.bool)
    rest[chosen] = False
    return chosen, torch.nonzero(rest).squeeze(1)
