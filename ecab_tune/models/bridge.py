"""Bridge attention across layers: ECAB, with BA-Net's bridge as its special case.

A network lists every conv output it computes as a `Layer` (the stem, then each block's conv
outputs in order). At a block, `select_layers` picks which of them feed the gate; their global
average-pooled descriptors are (optionally) projected to a common width, fused by sum or
concatenation, and turned into per-channel sigmoid weights for the block's last BN output.
BA-Net (Zhao et al.) is `layers="block", fusion="sum", project=True`; BA-Net v2's adaptive
selection is `AdaptiveBridgeAttention`.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecab_tune.models.attention import MIN_WIDTH, AttentionModule, channel_gate, reduced_width

FUSIONS = ("sum", "concat")
LAYER_WORDS = ("block", "lastK", "stage", "all", "a list of negative indices (-1: last)")
_LAST_K = re.compile(r"last([1-9][0-9]*)")  # one spelling: no "last02", no other digits


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
        if spec in ("block", "stage", "all") or match:
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
    # BA-Net's form: bias-free linear + BatchNorm1d.
    return nn.Sequential(nn.Linear(in_width, out_width, bias=False), nn.BatchNorm1d(out_width))


class BlockLinear(nn.Module):
    """Bias-free `Linear(C_i → width)` per source as one matmul over the concatenated inputs.

    The weight is block-diagonal (n·width × ΣC_i, zero off the blocks, kept so by a mask): one
    kernel instead of one per source, which matters on a GPU, where a ResNet-20 step is
    launch-bound. Output: the n projections side by side (N × n·width).
    """

    def __init__(self, in_widths: Sequence[int], width: int) -> None:
        super().__init__()
        self.in_widths, self.width = tuple(in_widths), width
        self.weight = nn.Parameter(torch.empty(width * len(in_widths), sum(in_widths)))
        mask = torch.zeros_like(self.weight)
        for rows, cols in self._blocks():
            mask[rows, cols] = 1.0
        self.register_buffer("mask", mask, persistent=False)
        self.reset_parameters()

    def _blocks(self) -> list[tuple[slice, slice]]:
        offsets = [0, *itertools.accumulate(self.in_widths)]
        return [
            (slice(i * self.width, (i + 1) * self.width), slice(offsets[i], offsets[i + 1]))
            for i in range(len(self.in_widths))
        ]

    def reset_parameters(self) -> None:
        # Each block as nn.Linear(C_i, width) would initialise it (fan_in = C_i).
        with torch.no_grad():
            self.weight.zero_()
            for rows, cols in self._blocks():
                nn.init.kaiming_uniform_(self.weight[rows, cols], a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask)

    @property
    def num_weights(self) -> int:
        """The weights the blocks hold: the model's parameters here, and the multiply-adds per
        input row. The stored zeros off the blocks are neither."""
        return self.width * sum(self.in_widths)

    def block_weights(self) -> list[Tensor]:
        """The per-source weights (width × C_i), as separate Linear layers would hold them."""
        return [self.weight[rows, cols] for rows, cols in self._blocks()]


def _load_per_source(state: dict[str, Tensor], prefix: str, n: int, norm: bool) -> None:
    """Rewrite a checkpoint of the per-source layout (`projections.i.0.weight`, and its BNs)
    into the fused one, so models saved before the fusion still load."""
    first = f"{prefix}projections.0.0.weight"
    if first not in state:
        return
    blocks = [state.pop(f"{prefix}projections.{i}.0.weight") for i in range(n)]
    state[f"{prefix}project.weight"] = torch.block_diag(*blocks)
    if norm:
        for key in ("weight", "bias", "running_mean", "running_var"):
            state[f"{prefix}norm.{key}"] = torch.cat(
                [state.pop(f"{prefix}projections.{i}.1.{key}") for i in range(n)]
            )
        tracked = [state.pop(f"{prefix}projections.{i}.1.num_batches_tracked") for i in range(n)]
        state[f"{prefix}norm.num_batches_tracked"] = tracked[0]


def _check_sources(source_channels: Sequence[int]) -> None:
    if not source_channels:
        raise ValueError("a bridge needs at least one source layer")


class BridgeAttention(AttentionModule):
    """ECAB gate: descriptors → [project] → fuse → [linear] → ReLU → linear → sigmoid.

    `project=True`: each descriptor gets its own `Linear(C_i → w) + BN` (w = C/r, at least
    `min_width`), computed as one block-diagonal matmul and one BN; the fused vector is their
    sum (width w) or concatenation (n·w). `project=False`: raw descriptors are fused (sum needs
    equal widths) and one `Linear(→ w) + BN` follows. Either way the learnable layer of width w
    sits between the descriptors and the gate.
    """

    uses_descriptors = True

    def __init__(
        self,
        channels: int,
        source_channels: Sequence[int],
        fusion: str = "concat",
        reduction: int = 16,
        project: bool = True,
        min_width: int = MIN_WIDTH,
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion={fusion!r} is invalid: expected {' or '.join(FUSIONS)}")
        if not isinstance(project, bool):
            raise ValueError(f"project={project!r} is invalid: expected true or false")
        _check_sources(source_channels)
        if fusion == "sum" and not project and len(set(source_channels)) > 1:
            raise ValueError(
                f"fusion=sum without projection needs equal widths, got {list(source_channels)}: "
                "use project=true or fusion=concat"
            )
        self.fusion, self.sources = fusion, len(source_channels)
        width = reduced_width(channels, reduction, min_width)
        self.project = BlockLinear(source_channels, width) if project else None
        self.norm = nn.BatchNorm1d(width * self.sources) if project else None
        self.hidden = None
        if project:
            fused = width if fusion == "sum" else width * self.sources
        else:
            raw = source_channels[0] if fusion == "sum" else sum(source_channels)
            self.hidden, fused = _projection(raw, width), width
        self.gate = nn.Linear(fused, channels, bias=False)  # bias-free, as in BA-Net's code

    def forward(self, x: Tensor, descriptors: list[Tensor] | None = None) -> Tensor:
        assert descriptors is not None, "a bridge gate needs the descriptors of its sources"
        if self.project is not None:
            fused = self.norm(self.project(torch.cat(descriptors, dim=1)))
            if self.fusion == "sum":
                fused = fused.view(fused.shape[0], self.sources, -1).sum(1)  # shape: traceable
        elif self.fusion == "sum":
            fused = self.hidden(torch.stack(descriptors).sum(0))
        else:
            fused = self.hidden(torch.cat(descriptors, dim=1))
        weights = torch.sigmoid(self.gate(F.relu(fused)))
        self.record("channel", weights)
        return channel_gate(x, weights)

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.project is not None:
            _load_per_source(state, prefix, self.sources, norm=True)
        super()._load_from_state_dict(state, prefix, *args, **kwargs)


class AdaptiveBridgeAttention(AttentionModule):
    """BA-Net v2's gate (Zhang, Zou et al. 2024; the authors' code: ZOUrz/BA-Net-Bridge-
    Attention-in-Deep-Neural-Networks, models/ba_resnet_v2_1.py, `BALayer`): each descriptor →
    bias-free `Linear(C_i → w)` (no BN); the "adaptive selection operator", a `Linear(n → 1)`
    with bias, mixes the n projections per feature; then BN → ReLU → bias-free `Linear(w → C)`
    → sigmoid. Same arithmetic as that code; the per-source linears run as one matmul."""

    uses_descriptors = True

    def __init__(
        self,
        channels: int,
        source_channels: Sequence[int],
        reduction: int = 16,
        min_width: int = MIN_WIDTH,
    ) -> None:
        super().__init__()
        _check_sources(source_channels)
        self.sources = len(source_channels)
        width = reduced_width(channels, reduction, min_width)
        self.project = BlockLinear(source_channels, width)
        self.select = nn.Linear(self.sources, 1)
        self.norm = nn.BatchNorm1d(width)
        self.gate = nn.Linear(width, channels, bias=False)

    def forward(self, x: Tensor, descriptors: list[Tensor] | None = None) -> Tensor:
        assert descriptors is not None, "a bridge gate needs the descriptors of its sources"
        projected = self.project(torch.cat(descriptors, dim=1))  # N × n·w, source-major
        stacked = projected.view(projected.shape[0], self.sources, -1).transpose(1, 2)  # N×w×n
        fused = self.norm(self.select(stacked).squeeze(-1))
        weights = torch.sigmoid(self.gate(F.relu(fused)))
        self.record("channel", weights)
        return channel_gate(x, weights)


class EcabHead(nn.Module):
    """The study's literal variant: every conv descriptor and the pooled final feature map
    (the plain classifier's input) concatenated → linear → classifier."""

    def __init__(self, source_channels: Sequence[int], width: int, num_classes: int) -> None:
        super().__init__()
        self.fuse = nn.Sequential(_projection(sum(source_channels), width), nn.ReLU(inplace=True))
        self.fc = nn.Linear(width, num_classes)

    def forward(self, descriptors: list[Tensor]) -> Tensor:
        return self.fc(self.fuse(torch.cat(descriptors, dim=1)))
