"""Stratified, seeded draws (`ecab_tune.data.sampling`)."""

from __future__ import annotations

import torch

from ecab_tune.data import stratified_split


def test_stratified_split_keeps_class_shares_and_is_seeded() -> None:
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)[torch.randperm(100)]
    chosen, rest = stratified_split(labels, 20, seed=5)
    assert labels[chosen].bincount().tolist() == [12, 6, 2]
    assert torch.equal(torch.cat([chosen, rest]).sort().values, torch.arange(100))
    assert torch.equal(chosen, chosen.sort().values)
    assert torch.equal(stratified_split(labels, 20, seed=5)[0], chosen)
    assert not torch.equal(stratified_split(labels, 20, seed=6)[0], chosen)
    # Rounding leftovers go to the largest remainders, so the count is exact.
    assert len(stratified_split(labels, 7, seed=0)[0]) == 7
