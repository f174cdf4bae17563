"""Helpers the model tests share."""

from __future__ import annotations

from torch import nn

from ecab_tune.models import AttentionModule


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gates(model: nn.Module) -> dict[str, AttentionModule]:
    return {n: m for n, m in model.named_modules() if isinstance(m, AttentionModule)}
