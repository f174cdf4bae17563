"""`/predict?cam=true` (Grad-CAM of the top-1 class) and the bridge gates' sources and shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from serve_support import RGB32, encode, fashion_test_images, make_checkpoint

from ecab_tune import checkpoint
from ecab_tune.data import preprocess
from ecab_tune.models import ModelConfig
from serve.app import create_app
from serve.bridge_sources import contributions, gate_sources, layer_names
from serve.cam import grad_cam
from serve.settings import ServeSettings

ECAB = {"layers": "last2", "fusion": "concat"}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    return {
        "cbam": make_checkpoint(root / "cbam", "cbam", seed=1),
        "ecab": make_checkpoint(root / "ecab", "ecab", seed=2, attention_kwargs=ECAB),
        "bav2_rgb": make_checkpoint(root / "bav2_rgb", "bav2", RGB32, seed=3),
    }


@pytest.fixture(scope="module")
def fashion() -> list[bytes]:
    return [encode(img) for img, _ in fashion_test_images(3)]


def predict(ckpt: Path, blobs: list[bytes], query: str) -> list[dict]:
    with TestClient(create_app(ServeSettings(model=str(ckpt)))) as client:
        files = [("files", (f"{i}.png", b, "image/png")) for i, b in enumerate(blobs)]
        r = client.post(f"/predict{query}", files=files)
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def class_activation_maps(ckpt: Path, blobs: list[bytes]) -> np.ndarray:
    """Zhou et al.'s CAM, Σ_k w_ck A_k with the linear head's weights: for a GAP → linear head
    Grad-CAM must equal it, so this checks the gradient path without using one."""
    import io

    from PIL import Image

    from ecab_tune.data import image_to_uint8

    model, meta = checkpoint.load_model(ckpt)
    d = meta.data
    x = torch.stack([image_to_uint8(Image.open(io.BytesIO(b)), d.channels) for b in blobs])
    store = []
    model.stage3[-1].register_forward_hook(lambda m, i, out: store.append(out))
    with torch.no_grad():
        top = model(preprocess(x, d)).argmax(1)
        cam = torch.einsum("nk,nkhw->nhw", model.fc.weight[top], store[0]).clamp_min(0)
    return (cam / cam.amax((1, 2), keepdim=True)).numpy()


def test_cam_is_off_by_default_and_equals_cam_for_a_linear_head(
    ckpts: dict[str, Path], fashion: list[bytes]
) -> None:
    plain = predict(ckpts["cbam"], fashion, "?top_k=10")
    assert all(p["cam"] is None and p["cam_shape"] is None for p in plain)
    with_cam = predict(ckpts["cbam"], fashion, "?top_k=10&cam=true")
    expected = class_activation_maps(ckpts["cbam"], fashion)
    for p, q, cam in zip(plain, with_cam, expected, strict=True):
        assert q["cam_shape"] == [7, 7]  # 28×28 through two stride-2 stages
        got = np.array(q["cam"])
        assert got.shape == (7, 7) and got.min() >= 0 and got.max() == pytest.approx(1)
        np.testing.assert_allclose(got, cam, atol=1e-5)
        # Asking for the map changes no probability.
        assert [t["index"] for t in q["top"]] == [t["index"] for t in p["top"]]
        np.testing.assert_allclose(
            [t["probability"] for t in q["top"]], [t["probability"] for t in p["top"]], atol=1e-6
        )


def test_cam_of_an_image_does_not_depend_on_its_batch(
    ckpts: dict[str, Path], fashion: list[bytes]
) -> None:
    together = predict(ckpts["ecab"], fashion, "?cam=true&attention=false")
    alone = predict(ckpts["ecab"], fashion[1:2], "?cam=true&attention=false")
    np.testing.assert_allclose(together[1]["cam"], alone[0]["cam"], atol=1e-5)


def test_grad_cam_handles_ecab_heads_nonlinear_classifier() -> None:
    model = ModelConfig("resnet8", "ecab_head", width=0.25, num_classes=10, in_chans=1).build()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        logits, cam = grad_cam(model.eval(), x)
        np.testing.assert_allclose(logits, model(x), atol=1e-6)
    assert cam.shape == (4, 7, 7) and float(cam.min()) >= 0 and float(cam.max()) <= 1
    assert not any(p.grad is not None for p in model.parameters())  # nothing left behind


def test_model_lists_each_bridge_gates_source_layers(ckpts: dict[str, Path]) -> None:
    with TestClient(create_app(ServeSettings(model=str(ckpts["ecab"])))) as client:
        modules = {m["name"]: m for m in client.get("/model").json()["attention_modules"]}
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
