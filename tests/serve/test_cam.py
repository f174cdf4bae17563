"""`/predict?cam=true`: Grad-CAM of the top-1 class."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from serve_support import predict

from ecab_tune import checkpoint
from ecab_tune.data import preprocess
from ecab_tune.models import ModelConfig
from serve.cam import grad_cam


def class_activation_maps(ckpt: Path, blobs: list[bytes]) -> np.ndarray:
    """Zhou et al.'s CAM, Σ_k w_ck A_k with the linear head's weights: for a GAP → linear head
    Grad-CAM must equal it, so this checks the gradient path without using one."""

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
        with grad_cam(model.eval()) as maps_of:
            logits = model(x)
            cam = maps_of(logits)
        np.testing.assert_allclose(logits.detach(), model(x), atol=1e-6)
    assert cam.shape == (4, 7, 7) and float(cam.min()) >= 0 and float(cam.max()) <= 1
    assert not any(p.grad is not None for p in model.parameters())  # nothing left behind
