"""Single-feature-map attention modules (SE, CBAM, ECA) and the capture of their weights.

Every module takes `channels` first, then its own options, and is called as
`module(x, descriptors)`: the bridge family (see `bridge.py`) reads the GAP descriptors of
earlier layers, the others ignore them. Each records the gates it computed, per sample, while a
`capture_attention` block is open; outside one, recording is a single `is None` check.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecab_tune.config import is_int, is_real

# Default narrowest bottleneck of a gate: C/16 of a 16-channel CIFAR stage would be 1. The papers'
# width is C//r with a floor of 1 (`min_width=1`).
MIN_WIDTH = 8


def reduced_width(channels: int, reduction: int, min_width: int = MIN_WIDTH) -> int:
    """Width of a gate's bottleneck: C // reduction, at least `min_width`."""
    check_reduction(reduction)
    if isinstance(min_width, bool) or not isinstance(min_width, int) or min_width < 1:
        raise ValueError(f"min_width={min_width!r} is invalid: expected an integer >= 1")
    return max(channels // reduction, min_width)


def check_reduction(reduction: int) -> None:
    if not is_int(reduction) or reduction < 1:
        raise ValueError(f"reduction={reduction!r} is invalid: expected an integer >= 1")


class AttentionModule(nn.Module):
    """Base of every gate: `record` hands the computed weights to an open capture."""

    uses_descriptors = False

    def __init__(self) -> None:
        super().__init__()
        self._sink: dict[str, Tensor] | None = None

    def record(self, kind: str, weights: Tensor) -> None:
        if self._sink is not None:
            self._sink[kind] = weights.detach()


@contextlib.contextmanager
def capture_attention(model: nn.Module) -> Iterator[dict[str, dict[str, Tensor]]]:
    """Collect `{module name: {"channel": N×C, "spatial": N×H×W}}` from forwards inside."""
    captured: dict[str, dict[str, Tensor]] = {}
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, AttentionModule)]
    for name, module in modules:
        module._sink = captured.setdefault(name, {})
    try:
        yield captured
    finally:
        for _, module in modules:
            module._sink = None


def channel_gate(x: Tensor, weights: Tensor) -> Tensor:
    """Rescale each channel of N×C×H×W `x` by N×C `weights`."""
    return x * weights[:, :, None, None].to(x.dtype)


class SqueezeExcite(AttentionModule):
    """Hu et al.: GAP → FC → ReLU → FC → sigmoid."""

    def __init__(self, channels: int, reduction: int = 16, min_width: int = MIN_WIDTH) -> None:
        super().__init__()
        width = reduced_width(channels, reduction, min_width)
        self.fc1 = nn.Linear(channels, width)
        self.fc2 = nn.Linear(width, channels)

    def forward(self, x: Tensor, descriptors: list[Tensor] | None = None) -> Tensor:
        weights = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        self.record("channel", weights)
        return channel_gate(x, weights)


class CBAM(AttentionModule):
    """Woo et al.: channel gate from avg+max pooled MLP, then a 7×7 spatial gate."""

    def __init__(
        self, channels: int, reduction: int = 16, kernel_size: int = 7, min_width: int = MIN_WIDTH
    ) -> None:
        super().__init__()
        if not is_int(kernel_size) or kernel_size not in (3, 5, 7):
            raise ValueError(f"kernel_size={kernel_size!r} is invalid: expected 3, 5 or 7")
        width = reduced_width(channels, reduction, min_width)
        self.mlp = nn.Sequential(
            nn.Linear(channels, width), nn.ReLU(inplace=True), nn.Linear(width, channels)
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(1),
        )

    def forward(self, x: Tensor, descriptors: list[Tensor] | None = None) -> Tensor:
        weights = torch.sigmoid(self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3))))
        self.record("channel", weights)
        x = channel_gate(x, weights)
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        spatial = torch.sigmoid(self.spatial(pooled))
        self.record("spatial", spatial[:, 0])
        return x * spatial.to(x.dtype)


def eca_kernel_size(channels: int, gamma: int = 2, beta: int = 1) -> int:
    """ECA-Net's adaptive kernel: the nearest odd number to (log2 C + b) / gamma."""
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


class ECA(AttentionModule):
    """Wang et al.: GAP → 1-D convolution across channels → sigmoid (no reduction)."""

    def __init__(self, channels: int, gamma: int = 2, beta: int = 1) -> None:
        super().__init__()
        if not is_real(gamma) or not gamma >= 1:
            raise ValueError(f"gamma={gamma!r} is invalid: expected a number >= 1")
        if not is_real(beta):
            raise ValueError(f"beta={beta!r} is invalid: expected a finite number")
        k = eca_kernel_size(channels, gamma, beta)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: Tensor, descriptors: list[Tensor] | None = None) -> Tensor:
        weights = torch.sigmoid(self.conv(x.mean((2, 3))[:, None, :])[:, 0])
        self.record("channel", weights)
        return channel_gate(x, weights)
