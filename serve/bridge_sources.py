"""What makes a bridge gate a bridge: which earlier layers feed it, and how much each does.

A bridge gate (`bridge`, `ecab`, `bav2`) fuses the global-average descriptors of several conv
outputs into one vector before its gate. Per image, each source's *share* is the L1 mass of its
additive contribution to that fused vector (after the projection and the BatchNorm scale, whose
shift belongs to no source), over the total: the shares of a gate sum to 1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ecab_tune.models import AttentionModule

CONVS = ("conv1", "conv2", "conv3")  # a block's conv outputs, in the order it reports them


def layer_names(model: nn.Module) -> list[str]:
    """The network's conv outputs in the order bridge gates index them: the stem, then each
    block's conv outputs (`stage1.block0.conv1`, ...)."""
    names = ["stem"]
    for stage in model.stage_names:
        for block_name, block in model.get_submodule(stage).named_children():
            names += [f"{stage}.{block_name}.{c}" for c in CONVS if hasattr(block, c)]
    return names


def _bridge_gates(model: nn.Module) -> Iterator[tuple[str, AttentionModule, tuple[int, ...]]]:
    for name, module in model.named_modules():
        if isinstance(module, AttentionModule) and module.uses_descriptors:
            block = model.get_submodule(name.rpartition(".")[0])
            yield name, module, tuple(block.sources)


def gate_sources(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """Each bridge gate's source layers, by gate name (gates without sources are absent)."""
    if not hasattr(model, "stage_names"):
        return {}
    names = layer_names(model)
    return {gate: tuple(names[i] for i in idx) for gate, _, idx in _bridge_gates(model)}


def _bn_scale(norm: nn.BatchNorm1d) -> Tensor:
    return norm.weight / torch.sqrt(norm.running_var + norm.eps)


def contributions(gate: nn.Module, descriptors: list[Tensor]) -> Tensor:
    """N × sources × width: each source's additive part of the fused pre-activation vector."""
    n = len(descriptors)
    if getattr(gate, "project", None) is not None:  # per-source projections (bridge, ecab, bav2)
        parts = torch.stack(
            [d @ w.T for d, w in zip(descriptors, gate.project.block_weights(), strict=True)], 1
        )
        if hasattr(gate, "select"):  # bav2: the adaptive selection mixes sources per feature
            parts = parts * gate.select.weight[0][None, :, None]
            return parts * _bn_scale(gate.norm)
        return parts * _bn_scale(gate.norm).view(n, -1)  # one BN over the n blocks side by side
    linear, norm = gate.hidden[0], gate.hidden[1]  # raw descriptors fused, then Linear + BN
    if gate.fusion == "sum":
        parts = torch.stack([d @ linear.weight.T for d in descriptors], 1)
    else:
        cols = torch.split(linear.weight, [d.shape[1] for d in descriptors], dim=1)
        parts = torch.stack([d @ w.T for d, w in zip(descriptors, cols, strict=True)], 1)
    return parts * _bn_scale(norm)


def shares(gate: nn.Module, descriptors: list[Tensor]) -> Tensor:
    """N × sources, each row summing to 1 (0 everywhere only if the fused vector is 0)."""
    mass = contributions(gate, descriptors).abs().sum(2)
    return mass / mass.sum(1, keepdim=True).clamp_min(1e-12)


@contextlib.contextmanager
def record_shares(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Collect `{gate name: N × sources shares}` from the forwards inside the block."""
    recorded: dict[str, Tensor] = {}
    hooks = []
    for name, gate, _ in _bridge_gates(model):

        def hook(module: nn.Module, args: tuple, name: str = name) -> None:
            recorded[name] = shares(module, args[1]).detach()

        hooks.append(gate.register_forward_pre_hook(hook))
    try:
        yield recorded
    finally:
        for h in hooks:
            h.remove()
