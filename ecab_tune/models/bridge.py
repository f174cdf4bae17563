"""Bridge attention across layers: ECAB, with BA-Net's bridge as its special case.

A network lists every conv output it computes as a `Layer` (the stem, then each block's conv
outputs in order). At a block, `select_layers` picks which of them feed the gate; their global
average-pooled descriptors are (optionally) projected to a common width, fused by sum or
concatenation, and turned into per-channel sigmoid weights for the block's last BN output.
BA-Net (Zhao et al.) is `layers="block", fusion="sum", project=True`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecab_tune.models.attention import (
    AttentionModule,
    channel_gate,
    check_reduction,
    reduced_width,
)

FUSIONS = ("sum", "concat")
LAYER_WORDS = ("block", "lastK", "stage", "all", "a list of negative indices (-1: last)")
_LAST_K = re.compile(r"last(\d+)")


@dataclass(frozen=True)
class Layer:
    """One conv output of the network: its stage and block (-1 for the stem) and width."""

    stage: int
    block: int
    channels: int


def check_layers(spec: Any) -> None:
    """Reject a malformed `layers` option before any network is built."""
    if isinstance(spec, str):
        match = _LAST_K.fullmatch(spec)
        if spec in ("block", "stage", "all") or (match and int(match[1]) >= 1):
            return
    elif (
        isinstance(spec, (list, tuple))
        and spec
        and all(isinstance(i, int) and not isinstance(i, bool) and i < 0 for i in spec)
        and len(set(spec)) == len(spec)
    ):
        return
    raise ValueError(f"layers={spec!r} is invalid: expected {', '.join(LAYER_WORDS)}")


def select_layers(spec: Any, layers: Sequence[Layer], where: str) -> tuple[int, ...]:
    """Indices into `layers` feeding the gate of the block whose last conv output is layers[-1]."""
    check_layers(spec)
    current = layers[-1]
    if isinstance(spec, (list, tuple)):
        if -min(spec) > len(layers):
            raise ValueError(
                f"layers={list(spec)}: index {min(spec)} reaches before the stem at {where}, "
                f"where only {len(layers)} conv outputs exist"
            )
        return tuple(sorted(len(layers) + i for i in spec))
    match = _LAST_K.fullmatch(spec)
    keep = {
        "block": lambda layer: layer.block == current.block,
        "stage": lambda layer: layer.stage == current.stage,
        "all": lambda layer: True,
    }.get(spec, lambda layer: layer.block > current.block - int(match[1]) and layer.block >= 0)
    return tuple(i for i, layer in enumerate(layers) if keep(layer))


def descriptor(x: Tensor) -> Tensor:
    """Global average pool: N×C×H×W → N×C."""
    return x.mean((2, 3))


def _projection(in_width: int, out_width: int) -> nn.Sequential:
    # BA-Net's form: bias-free linear + BatchNorm1d per descriptor.
    return nn.Sequential(nn.Linear(in_width, out_width, bias=False), nn.BatchNorm1d(out_width))


class BridgeAttention(AttentionModule):
    """ECAB gate: descriptors → [project] → fuse → [linear] → ReLU → linear → sigmoid.

    `project=True`: each descriptor gets its own `Linear(C_i → C/r) + BN`; the fused vector is
    their sum (width C/r) or concatenation (n·C/r). `project=False`: raw descriptors are fused
    (sum needs equal widths) and one `Linear(→ C/r) + BN` follows. Either way the learnable
    layer of width C/r sits between the descriptors and the gate.
    """

    uses_descriptors = True

    def __init__(
        self,
        channels: int,
        source_channels: Sequence[int],
        fusion: str = "concat",
        reduction: int = 16,
        project: bool = True,
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        if fusion not in FUSIONS:
            raise ValueError(f"fusion={fusion!r} is invalid: expected {' or '.join(FUSIONS)}")
        if not isinstance(project, bool):
            raise ValueError(f"project={project!r} is invalid: expected true or false")
        if not source_channels:
            raise ValueError("a bridge needs at least one source layer")
        if fusion == "sum" and not project and len(set(source_channels)) > 1:
            raise ValueError(
                f"fusion=sum without projection needs equal widths, got {list(source_channels)}: "
                "use project=true or fusion=concat"
            )
        self.fusion = fusion
        width = reduced_width(channels, reduction)
        self.projections = (
            nn.ModuleList(_projection(c, width) for c in source_channels) if project else None
        )
        self.hidden = None
        if project:
            fused = width if fusion == "sum" else width * len(source_channels)
        else:
            raw = source_channels[0] if fusion == "sum" else sum(source_channels)
            self.hidden, fused = _projection(raw, width), width
        self.gate = nn.Linear(fused, channels, bias=False)  # bias-free, as in BA-Net's code

    def forward(self, x: Tensor, descriptors: list[Tensor] | None = None) -> Tensor:
        assert descriptors is not None, "a bridge gate needs the descriptors of its sources"
        if self.projections is not None:
            descriptors = [p(d) for p, d in zip(self.projections, descriptors, strict=True)]
        fused = (
            torch.stack(descriptors).sum(0)
            if self.fusion == "sum"
            else torch.cat(descriptors, dim=1)
        )
        if self.hidden is not None:
            fused = self.hidden(fused)
        weights = torch.sigmoid(self.gate(F.relu(fused)))
        self.record("channel", weights)
        return channel_gate(x, weights)


class EcabHead(nn.Module):
    """The study's literal variant: every conv descriptor concatenated → linear → classifier."""

    def __init__(self, source_channels: Sequence[int], width: int, num_classes: int) -> None:
        super().__init__()
        self.fuse = nn.Sequential(_projection(sum(source_channels), width), nn.ReLU(inplace=True))
        self.fc = nn.Linear(width, num_classes)

    def forward(self, descriptors: list[Tensor]) -> Tensor:
        return self.fc(self.fuse(torch.cat(descriptors, dim=1)))
