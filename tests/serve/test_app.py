"""The routes in-process (FastAPI TestClient): health, readiness, the model's description, the
shape of a prediction."""

from __future__ import annotations

import base64
import io
import os

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from serve_support import (
    AUTH,
    FASHION,
    assert_error,
    assert_matches,
    direct,
    make_client,
    noise_png,
    post_files,
)

from ecab_tune import checkpoint


def test_health_and_readiness(client: TestClient, ckpts) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    # Named relative to the model root (the folder holding --model): no absolute paths.
    assert ready.json() == {"status": "ready", "model": "cbam", "generation": 0}


def test_not_ready_without_a_model() -> None:
    with make_client(None) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 503
        assert c.get("/readyz").json() == {"status": "not ready", "reason": "no model is loaded"}
        assert_error(post_files(c, [noise_png()]), 503, "no model")
        assert_error(c.get("/model"), 503, "no model")


def test_model_describes_the_checkpoint(client: TestClient, ckpts) -> None:
    info = client.get("/model", headers=AUTH).json()
    model, meta = checkpoint.load_model(ckpts["cbam"])
    assert info["architecture"] == "resnet8"
    assert info["attention"] == "cbam"
    assert info["classes"] == list(FASHION.classes)
    assert info["input_shape"] == [1, 28, 28]
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["metrics"]["val_acc"] == 0.5
    assert info["search"]["params"]["attention"] == "cbam"
    assert info["config"] == meta.model.to_dict()
    # The gate's width floor and every other default are spelled out, not only what was set.
    assert info["attention_kwargs"] == {"reduction": 16, "kernel_size": 7, "min_width": 8}
    assert info["data"]["name"] == "fashion-mnist"
    modules = info["attention_modules"]
    assert modules and all(set(m["outputs"]) == {"channel", "spatial"} for m in modules)
    assert all(m["channels"] > 0 for m in modules)
    assert info["path"] == str(ckpts["cbam"].resolve()) and info["pid"] == os.getpid()


def test_model_hides_paths_and_host_without_the_token(client: TestClient, ckpts) -> None:
    public = client.get("/model")
    assert public.status_code == 200
    text = public.text
    assert str(ckpts["cbam"].parent) not in text and str(os.getpid()) not in text
    body = public.json()
    assert body["name"] == "cbam" and body["architecture"] == "resnet8"
    assert not {"path", "source", "search", "pid"} & set(body)
    assert_error(client.get("/model", headers={"Authorization": "Bearer wrong"}), 401, "wrong")
    full = client.get("/model", headers=AUTH).json()
    assert {"path", "source", "search", "pid"} <= set(full)
    with make_client(ckpts["cbam"]) as c:  # no token configured: never the details
        assert "path" not in c.get("/model", headers=AUTH).json()


def test_predict_shape_of_the_answer(client: TestClient, ckpts) -> None:
    r = post_files(client, [noise_png(1), noise_png(2)])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "cbam"
    assert [p["name"] for p in body["predictions"]] == ["img0.png", "img1.png"]
    modules = {m["name"]: m for m in client.get("/model").json()["attention_modules"]}
    for p in body["predictions"]:
        probs = [t["probability"] for t in p["top"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True)
        assert set(p["attention"]) == set(modules)
        for name, weights in p["attention"].items():
            assert len(weights["channel"]) == modules[name]["channels"]
            spatial = np.array(weights["spatial"])
            assert spatial.ndim == 2 and ((spatial >= 0) & (spatial <= 1)).all()


def test_predict_json_base64(client: TestClient, ckpts) -> None:
    blobs = [noise_png(7), noise_png(8)]
    images = [
        base64.b64encode(blobs[0]).decode(),
        "data:image/png;base64," + base64.b64encode(blobs[1]).decode(),
    ]
    r = client.post("/predict", json={"images": images}, headers=AUTH)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["name"] for p in preds] == ["images[0]", "images[1]"]
    for blob, pred in zip(blobs, preds, strict=True):
        probs, maps = direct(ckpts["cbam"], Image.open(io.BytesIO(blob)))
        assert_matches(pred, probs, maps, FASHION.classes)
