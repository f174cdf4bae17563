"""The bridge gates' source layers, and each source's share per image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from serve_support import encode, predict

from ecab_tune import checkpoint
from ecab_tune.models import ModelConfig
from ecab_tune.models.bridge import BlockLinear
from serve.app import create_app
from serve.bridge_sources import contributions, gate_sources, layer_names
from serve.settings import ServeSettings

ECAB = {"layers": "last2", "fusion": "concat"}


def test_model_lists_each_bridge_gates_source_layers(ckpts: dict[str, Path]) -> None:
    with TestClient(create_app(ServeSettings(model=str(ckpts["ecab"])))) as client:
        described = client.get("/model").json()
    modules = {m["name"]: m for m in described["attention_modules"]}
    # Parameters as separate per-source layers hold them: not the fused weight's stored zeros.
    model, _ = checkpoint.load_model(ckpts["ecab"])
    fused = [m for m in model.modules() if isinstance(m, BlockLinear)]
    zeros = sum(m.weight.numel() - sum(w.numel() for w in m.block_weights()) for m in fused)
    assert zeros > 0
    assert described["parameters"] == sum(p.numel() for p in model.parameters()) - zeros
    # ecab's last2 at the second stage's only block: its own conv outputs and the block before.
    assert modules["stage2.block0.attn"]["sources"] == [
        "stage1.block0.conv1", "stage1.block0.conv2", "stage2.block0.conv1", "stage2.block0.conv2",
    ]  # fmt: skip
    assert modules["stage1.block0.attn"]["sources"][0] == "stage1.block0.conv1"
    with TestClient(create_app(ServeSettings(model=str(ckpts["cbam"])))) as client:
        assert all("sources" not in m for m in client.get("/model").json()["attention_modules"])


@pytest.mark.parametrize(
    ("attention", "options"),
    [("ecab", {"layers": "all"}), ("bridge", {}), ("bav2", {})],
)
def test_source_names_point_at_layers_of_the_widths_the_gate_reads(attention, options) -> None:
    model = ModelConfig("resnet8", attention, options, width=0.25, in_chans=1).build()
    names = layer_names(model)
    assert names[0] == "stem" and len(names) == 1 + 2 * 3

    def width(name: str) -> int:
        return (
            model.stem[0].out_channels if name == "stem" else model.get_submodule(name).out_channels
        )

    for gate, sources in gate_sources(model).items():
        assert [width(s) for s in sources] == list(model.get_submodule(gate).project.in_widths)


@pytest.mark.parametrize(
    ("attention", "options"),
    [
        ("ecab", ECAB),
        ("bridge", {}),  # projected, summed
        ("bav2", {}),  # adaptive selection
        ("ecab", {"layers": "block", "project": False, "fusion": "sum"}),
        ("ecab", {"layers": "last2", "project": False, "fusion": "concat"}),
    ],
)
def test_source_contributions_add_up_to_the_fused_vector(
    attention, options, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ModelConfig("resnet8", attention, options, width=0.5, in_chans=1).build().eval()
    gate = model.stage2.block0.attn
    for m in gate.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.normal_()
    descriptors = (
        [torch.randn(3, w) for w in gate.project.in_widths]
        if gate.project
        else [
            torch.randn(3, model.get_submodule(s).out_channels)
            for s in gate_sources(model)["stage2.block0.attn"]
        ]
    )
    fused: list[torch.Tensor] = []
    relu = torch.nn.functional.relu
    monkeypatch.setattr(torch.nn.functional, "relu", lambda t, **kw: fused.append(t) or relu(t))
    x = torch.randn(3, gate.gate.out_features, 4, 4)
    with torch.no_grad():
        gate(x, descriptors)
        gate(x, [torch.zeros_like(d) for d in descriptors])  # what no source contributes
        parts = contributions(gate, descriptors)
    concat = gate.project is not None and getattr(gate, "fusion", "") == "concat"
    total = parts.flatten(1) if concat else parts.sum(1)
    np.testing.assert_allclose(total, fused[0] - fused[1], atol=1e-5)


def test_predict_gives_each_sources_share_per_image(
    ckpts: dict[str, Path], fashion: list[bytes]
) -> None:
    predictions = predict(ckpts["ecab"], fashion, "")
    with TestClient(create_app(ServeSettings(model=str(ckpts["ecab"])))) as client:
        modules = client.get("/model").json()["attention_modules"]
    for p in predictions:
        for m in modules:
            shares = p["attention"][m["name"]]["sources"]
            assert list(shares) == m["sources"]
            assert sum(shares.values()) == pytest.approx(1, abs=1e-5)
            assert all(0 <= s <= 1 for s in shares.values())
    # Shares depend on the image.
    first = predictions[0]["attention"]["stage3.block0.attn"]["sources"]
    second = predictions[1]["attention"]["stage3.block0.attn"]["sources"]
    assert first != second
    rgb = predict(ckpts["bav2_rgb"], [encode(np.full((32, 32, 3), 90, np.uint8))], "")
    assert set(rgb[0]["attention"]["stage1.block0.attn"]["sources"]) == {
        "stage1.block0.conv1",
        "stage1.block0.conv2",
    }
    assert (
        predict(ckpts["cbam"], fashion[:1], "")[0]["attention"]["stage1.block0.attn"]["sources"]
        is None
    )
