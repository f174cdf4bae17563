"""The bridge gates (`models.bridge`): layer selection, and the papers' arithmetic."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ecab_tune.models import capture_attention, create_model
from ecab_tune.models.bridge import AdaptiveBridgeAttention, BridgeAttention, Layer, select_layers


@pytest.mark.parametrize(
    "options",
    [
        {"layers": "all", "fusion": "concat"},
        {"layers": "all", "fusion": "sum"},
        {"layers": "stage", "fusion": "concat", "project": False},
        {"layers": [-1, -3], "fusion": "sum"},
    ],
)
def test_gradients_reach_every_bridge_input(options):
    model = create_model("resnet8", "ecab", width=0.5, **options)
    model(torch.randn(4, 3, 16, 16)).square().mean().backward()
    bridges = [m for m in model.modules() if isinstance(m, BridgeAttention)]
    assert bridges
    for bridge in bridges:
        if bridge.project is not None:  # each source's block of the fused projection
            grads = [g for g in bridge.project.weight.grad.split(bridge.project.in_widths, 1)]
            assert all(g.abs().sum() > 0 for g in grads)
        else:  # one linear over all sources: each column block
            grad = bridge.hidden[0].weight.grad
            assert (grad.abs().sum(0) > 0).all()


def ba_net_reference(state: dict, pre: list, cur: torch.Tensor) -> torch.Tensor:
    """BA-Net's gate (zhaoy376/Bridge-Attention, models/BA_module.py, BA_module_resnet) written
    out in plain tensor ops from its parameters: each earlier descriptor and the current one get
    their own bias-free linear + BatchNorm1d (eval), the results are summed, then ReLU, a
    bias-free linear back to C, and a sigmoid."""

    def fusion(prefix: str, x: torch.Tensor) -> torch.Tensor:
        y = x @ state[f"{prefix}.0.weight"].T
        mean, var = state[f"{prefix}.1.running_mean"], state[f"{prefix}.1.running_var"]
        return (y - mean) / torch.sqrt(var + 1e-5) * state[f"{prefix}.1.weight"] + state[
            f"{prefix}.1.bias"
        ]

    pre_fused = sum(fusion(f"pre_fusions.{i}", p) for i, p in enumerate(pre))
    fused = fusion("cur_fusion", cur) + pre_fused
    return torch.sigmoid(torch.relu(fused) @ state["generation.1.weight"].T)


def test_bridge_equals_ba_net_reference_numerically():
    torch.manual_seed(0)
    channels, mid = 256, 64  # a ResNet-50 bottleneck: conv1/conv2 give 64, conv3 gives 256
    ours = BridgeAttention(channels, [mid, mid, channels], fusion="sum", reduction=16).eval()
    for module in ours.modules():
        if isinstance(module, nn.BatchNorm1d):  # non-trivial statistics
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    # BA-Net's parameter names for the same tensors: conv1/conv2 are "pre", conv3 is "cur".
    mine, width = ours.state_dict(), channels // 16
    blocks = ours.project.block_weights()
    state = {"generation.1.weight": mine["gate.weight"]}
    for theirs, index in (("pre_fusions.0", 0), ("pre_fusions.1", 1), ("cur_fusion", 2)):
        state[f"{theirs}.0.weight"] = blocks[index]
        for key in ("weight", "bias", "running_mean", "running_var"):
            state[f"{theirs}.1.{key}"] = mine[f"norm.{key}"][index * width : (index + 1) * width]
    out3 = torch.randn(3, channels, 8, 8)
    pooled = [torch.randn(3, mid), torch.randn(3, mid), out3.mean((2, 3))]
    expected = ba_net_reference(state, pooled[:2], pooled[2])
    with capture_attention(ours) as captured:
        got = ours(out3, pooled)
    torch.testing.assert_close(captured[""]["channel"], expected)
    torch.testing.assert_close(got, out3 * expected[:, :, None, None])


def test_bridge_is_ecab_on_the_blocks_own_layers_summed():
    bridge = create_model("resnet50", "bridge", width=0.5)
    ecab = create_model("resnet50", "ecab", width=0.5, layers="block", fusion="sum", project=True)
    assert [n for n, _ in bridge.named_parameters()] == [n for n, _ in ecab.named_parameters()]
    ecab.load_state_dict(bridge.state_dict())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(bridge.eval()(x), ecab.eval()(x))
    block = bridge.get_submodule("stage2.block1")
    # stem (1) + stage1 3×3 + stage2 block0 3 conv outputs before it; its own three come next.
    assert block.sources == (13, 14, 15)


def test_layer_selection():
    # stem, two blocks of stage 0 (2 convs each), one block of stage 1.
    table = [
        Layer(-1, -1, 8),
        Layer(0, 0, 8),
        Layer(0, 0, 8),
        Layer(0, 1, 8),
        Layer(0, 1, 8),
        Layer(1, 2, 16),
        Layer(1, 2, 16),
    ]
    assert select_layers("block", table, "x") == (5, 6)
    assert select_layers("last2", table, "x") == (3, 4, 5, 6)
    assert select_layers("last9", table, "x") == (1, 2, 3, 4, 5, 6)
    assert select_layers("stage", table, "x") == (5, 6)
    assert select_layers("stage", table[:5], "x") == (1, 2, 3, 4)
    assert select_layers("all", table, "x") == tuple(range(7))
    assert select_layers([-1, -7], table, "x") == (0, 6)


class PerSourceBridge(nn.Module):
    """The bridge gate as it was before its projections were fused: one `Linear + BN` module
    per source (the layout of checkpoints saved before the fusion)."""

    def __init__(self, channels: int, sources: list[int], fusion: str, width: int) -> None:
        super().__init__()
        self.fusion = fusion
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Linear(c, width, bias=False), nn.BatchNorm1d(width)) for c in sources
        )
        fused = width if fusion == "sum" else width * len(sources)
        self.gate = nn.Linear(fused, channels, bias=False)

    def forward(self, x: torch.Tensor, descriptors: list[torch.Tensor]) -> torch.Tensor:
        projected = [p(d) for p, d in zip(self.projections, descriptors, strict=True)]
        if self.fusion == "sum":
            fused = torch.stack(projected).sum(0)
        else:
            fused = torch.cat(projected, dim=1)
        return x * torch.sigmoid(self.gate(torch.relu(fused)))[:, :, None, None]


@pytest.mark.parametrize("fusion", ["sum", "concat"])
def test_fused_bridge_equals_the_per_source_gate_in_outputs_and_gradients(fusion):
    torch.manual_seed(0)
    sources, channels = [16, 16, 32, 32], 32
    old = PerSourceBridge(channels, sources, fusion, width=8).train()
    for module in old.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    new = BridgeAttention(channels, sources, fusion=fusion, reduction=4).train()
    new.load_state_dict(old.state_dict())  # the old layout loads into the fused one
    x = torch.randn(6, channels, 4, 4)
    descriptors = [torch.randn(6, c) for c in sources]
    (old(x, descriptors) ** 2).sum().backward()
    (new(x, descriptors) ** 2).sum().backward()
    torch.testing.assert_close(new(x, descriptors), old(x, descriptors))
    # One matmul sums in another order than n small ones: equal up to float32 rounding.
    close = {"rtol": 1e-4, "atol": 1e-4}
    old_grads = [p[0].weight.grad for p in old.projections]
    new_grads = [new.project.weight.grad[r, c] for r, c in new.project._blocks()]
    for got, expected in zip(new_grads, old_grads, strict=True):
        torch.testing.assert_close(got, expected, **close)
    off_block = new.project.weight.grad * (1 - new.project.mask)
    assert off_block.abs().sum() == 0  # the zeros stay zeros
    torch.testing.assert_close(new.gate.weight.grad, old.gate.weight.grad, **close)
    bn_grad = torch.cat([p[1].weight.grad for p in old.projections])
    torch.testing.assert_close(new.norm.weight.grad, bn_grad, **close)


def bav2_reference(state: dict, features: list, generation_bn: dict) -> torch.Tensor:
    """BA-Net v2's `BALayer` (ZOUrz/BA-Net-Bridge-Attention-in-Deep-Neural-Networks,
    models/ba_resnet_v2_1.py) in plain tensor ops: per-source bias-free linear, stacked on a
    last axis, `Linear(n, 1)`, then BatchNorm1d (eval) → ReLU → bias-free linear → sigmoid."""
    fusions = [f @ state[f"fusions.{i}.0.weight"].T for i, f in enumerate(features)]
    stacked = torch.stack(fusions, dim=2)  # N × w × n
    fused = (stacked @ state["proj.weight"].T).squeeze(-1) + state["proj.bias"]
    bn = generation_bn
    normed = (fused - bn["mean"]) / torch.sqrt(bn["var"] + 1e-5) * bn["weight"] + bn["bias"]
    return torch.sigmoid(torch.relu(normed) @ state["generation.2.weight"].T)


def test_bav2_equals_the_official_arithmetic():
    torch.manual_seed(1)
    channels, sources = 64, [64, 64]
    ours = AdaptiveBridgeAttention(channels, sources, reduction=16, min_width=1).eval()
    ours.norm.running_mean.uniform_(-0.5, 0.5)
    ours.norm.running_var.uniform_(0.5, 1.5)
    ours.select.bias.data.fill_(0.3)
    blocks = ours.project.block_weights()
    state = {f"fusions.{i}.0.weight": b for i, b in enumerate(blocks)}
    state |= {"proj.weight": ours.select.weight, "proj.bias": ours.select.bias}
    state["generation.2.weight"] = ours.gate.weight
    bn = {
        "mean": ours.norm.running_mean,
        "var": ours.norm.running_var,
        "weight": ours.norm.weight,
        "bias": ours.norm.bias,
    }
    x = torch.randn(3, channels, 5, 5)
    features = [torch.randn(3, 64), x.mean((2, 3))]
    with torch.no_grad(), capture_attention(ours) as captured:
        ours(x, features)
        expected = bav2_reference(state, features, bn)
    torch.testing.assert_close(captured[""]["channel"], expected)
    assert ours.project.width == channels // 16  # the papers' width at min_width=1
