"""The HTTP service in-process (FastAPI TestClient): endpoints, bad input, batching, reload."""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import shutil
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from serve_support import (
    FASHION,
    FASHION_DIR,
    RGB32,
    direct,
    encode,
    fashion_test_images,
    make_checkpoint,
)

from ecab_tune import checkpoint
from ecab_tune.checkpoint import CheckpointError
from serve.__main__ import parse_args
from serve.app import create_app
from serve.inference import resolve_checkpoint
from serve.settings import ServeSettings

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TOL = 1e-5


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints of each shape and attention family the service must handle."""
    root = tmp_path_factory.mktemp("ckpts")
    return {
        "cbam": make_checkpoint(root / "cbam", "cbam", FASHION, seed=1),
        "ecab": make_checkpoint(
            root / "ecab",
            "ecab",
            FASHION,
            seed=2,
            attention_kwargs={"layers": "last2", "fusion": "concat"},
        ),
        "bridge_rgb": make_checkpoint(root / "bridge_rgb", "bridge", RGB32, seed=3),
        "cbam_rgb": make_checkpoint(root / "cbam_rgb", "cbam", RGB32, seed=4),
    }


def make_client(model: Path | None, **settings) -> TestClient:
    app = create_app(ServeSettings(model=None if model is None else str(model), **settings))
    return TestClient(app)


@pytest.fixture
def under_root(ckpts: dict[str, Path], request: pytest.FixtureRequest) -> Path:
    """A fresh folder inside the model root of `client` (the folder holding the checkpoints)."""
    folder = ckpts["cbam"].parent / f"scratch-{request.node.name}"
    folder.mkdir()
    return folder


@pytest.fixture
def client(ckpts: dict[str, Path]):
    with make_client(ckpts["cbam"], token=TOKEN) as c:
        yield c


def noise_png(seed: int = 0, shape=(28, 28), mode: str | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
    return encode(image.convert(mode) if mode else image)


def post_files(
    client: TestClient, blobs: list[bytes], query: str = "", headers=AUTH, field: str = "files"
):
    files = [(field, (f"img{i}.png", blob, "image/png")) for i, blob in enumerate(blobs)]
    return client.post(f"/predict{query}", files=files, headers=headers)


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail"}, body
    assert isinstance(body["detail"], str)
    for word in words:
        assert word.lower() in body["detail"].lower(), body["detail"]


def assert_still_serving(client: TestClient) -> None:
    r = post_files(client, [noise_png(99)])
    assert r.status_code == 200, r.text


def assert_matches(prediction: dict, probs: torch.Tensor, maps: dict, classes) -> None:
    top = prediction["top"]
    expected = torch.sort(probs, descending=True)
    assert [t["index"] for t in top] == expected.indices[: len(top)].tolist()
    for t in top:
        assert t["label"] == classes[t["index"]]
        assert abs(t["probability"] - probs[t["index"]].item()) < TOL
    assert set(prediction["attention"]) == set(maps)
    for name, outputs in maps.items():
        got = prediction["attention"][name]
        for kind, values in outputs.items():
            np.testing.assert_allclose(np.array(got[kind]), np.array(values), atol=TOL)


# Endpoints ------------------------------------------------------------------------------------


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


def test_openapi_docs_and_page(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    params = {p["name"]: p for p in spec["paths"]["/predict"]["post"]["parameters"]}
    assert set(params) == {"top_k", "attention", "cam"}
    assert params["top_k"]["in"] == "query"
    assert "classes per image" in params["top_k"]["description"]
    assert spec["paths"]["/predict"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    for name in ("PredictResponse", "ModelInfo", "ImagePrediction", "Error"):
        assert name in spec["components"]["schemas"]
    files = body["multipart/form-data"]["schema"]["properties"]["files"]
    assert files["minItems"] == 1 and files["maxItems"] == 16
    assert set(spec["paths"]["/predict"]["post"]["responses"]) >= {
        "200",
        "400",
        "401",
        "408",
        "413",
        "415",
        "422",
        "503",
        "504",
    }
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="file"' in page.text
    assert client.get("/static/app.js").status_code == 200


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


def test_predict_query_values(client: TestClient) -> None:
    png = noise_png()
    assert len(post_files(client, [png], "?top_k=3").json()["predictions"][0]["top"]) == 3
    assert len(post_files(client, [png], "?top_k=10").json()["predictions"][0]["top"]) == 10
    r = post_files(client, [png], "?attention=false")
    assert r.status_code == 200 and r.json()["predictions"][0]["attention"] is None
    assert_error(post_files(client, [png], "?top_k=11"), 422, "top_k=11", "10 classes")
    assert_error(post_files(client, [png], "?top_k=0"), 422, "top_k", "greater than or equal to 1")
    assert_error(post_files(client, [png], "?top_k=abc"), 422, "top_k", "integer", "abc")
    assert_error(post_files(client, [png], "?attention=maybe"), 422, "attention", "maybe")
    assert_error(post_files(client, [png], "?topk=3"), 422, "unknown query parameter", "topk")
    assert_still_serving(client)


@pytest.mark.parametrize(
    ("fmt", "mode", "kw"),
    [
        ("PNG", "L", {}),
        ("PNG", "RGB", {}),
        ("PNG", "RGBA", {}),
        ("PNG", "P", {}),
        ("PNG", "LA", {}),
        ("PNG", "I;16", {}),
        ("PNG", "1", {}),
        ("JPEG", "RGB", {}),
        ("JPEG", "L", {}),
        ("JPEG", "CMYK", {}),
        ("WEBP", "RGB", {"lossless": True}),
        ("WEBP", "RGBA", {}),
        ("BMP", "RGB", {}),
        ("BMP", "L", {}),
        ("GIF", "P", {}),
    ],
)
def test_predict_accepts_formats_and_modes(client: TestClient, ckpts, fmt, mode, kw) -> None:
    rng = np.random.default_rng(5)
    image = Image.fromarray(rng.integers(0, 256, (37, 41, 3), dtype=np.uint8)).convert(mode)
    blob = encode(image, fmt, **kw)
    r = post_files(client, [blob])
    assert r.status_code == 200, r.text
    probs, maps = direct(ckpts["cbam"], Image.open(io.BytesIO(blob)))
    assert_matches(r.json()["predictions"][0], probs, maps, FASHION.classes)


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


# The API equals direct inference on real images ----------------------------------------------


@pytest.mark.parametrize("name", ["bridge_rgb", "cbam_rgb"])
def test_prediction_equals_direct_inference_on_sample_photos(ckpts, name) -> None:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # china.jpg and flower.jpg, 427×640 RGB
    blobs = [encode(photo) for photo in photos]
    with make_client(ckpts[name]) as c:
        r = post_files(c, blobs, "?top_k=10", headers={})
    assert r.status_code == 200, r.text
    for photo, pred in zip(photos, r.json()["predictions"], strict=True):
        probs, maps = direct(ckpts[name], Image.fromarray(photo))
        assert maps, "the model has attention modules"
        assert_matches(pred, probs, maps, RGB32.classes)


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason=f"{FASHION_DIR} is absent")
@pytest.mark.parametrize("name", ["cbam", "ecab"])
def test_prediction_equals_direct_inference_on_fashion_mnist(ckpts, name) -> None:
    samples = fashion_test_images(8)
    with make_client(ckpts[name]) as c:
        r = post_files(c, [encode(image) for image, _ in samples], "?top_k=10", headers={})
    assert r.status_code == 200, r.text
    for (image, _), pred in zip(samples, r.json()["predictions"], strict=True):
        probs, maps = direct(ckpts[name], Image.fromarray(image))
        assert_matches(pred, probs, maps, FASHION.classes)


# Bad input: a clear 4xx, and the server keeps serving -----------------------------------------


def test_not_an_image(client: TestClient) -> None:
    assert_error(post_files(client, [b"hello, I am text"]), 422, "img0.png", "not a supported")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'
    assert_error(post_files(client, [svg]), 422, "not a supported image")
    tiff = encode(Image.new("L", (8, 8)), "TIFF")
    assert_error(post_files(client, [tiff]), 422, "not a supported image")
    assert_still_serving(client)


def test_truncated_image(client: TestClient) -> None:
    png = noise_png(3, shape=(64, 64))
    assert_error(post_files(client, [png[: len(png) // 2]]), 422, "truncated")
    jpeg = encode(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)),
        "JPEG",
    )
    assert_error(post_files(client, [jpeg[: len(jpeg) // 2]]), 422, "truncated")
    assert_still_serving(client)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width×height pixels (a decompression bomb's shape)."""
    png = bytearray(encode(Image.new("L", (1, 1))))
    ihdr = bytes(png[12:16]) + width.to_bytes(4, "big") + height.to_bytes(4, "big") + png[24:29]
    png[16:24] = ihdr[4:12]
    png[29:33] = zlib.crc32(ihdr).to_bytes(4, "big")
    return bytes(png)


def test_decompression_bomb(client: TestClient, ckpts) -> None:
    assert_error(
        post_files(client, [png_claiming(5000, 9000)]),
        413,
        "45,000,000 pixels",
        "limit is 12,000,000",
    )
    # Beyond PIL's own guard, PIL refuses first; same status, same advice.
    assert_error(
        post_files(client, [png_claiming(50_000, 50_000)]),
        413,
        "decompression bomb",
        "limit is 12,000,000",
    )
    # A real, fully valid image over a lower limit: refused before its pixels are decoded.
    bomb = encode(Image.new("L", (2000, 2000)))
    assert len(bomb) < 20_000
    with make_client(ckpts["cbam"], max_pixels=1_000_000) as c:
        assert_error(post_files(c, [bomb], headers={}), 413, "4,000,000 pixels", "1,000,000")
        assert post_files(c, [noise_png()], headers={}).status_code == 200
    assert_still_serving(client)


def test_request_pixel_budget(client: TestClient, ckpts) -> None:
    # 16 images each under the per-image limit, together far over the request's budget:
    # refused from their headers alone, before any pixel is decoded.
    each = png_claiming(3000, 3000)
    assert_error(post_files(client, [each] * 16), 413, "144,000,000 pixels", "48,000,000")
    with make_client(ckpts["cbam"], max_pixels=10_000, max_request_pixels=20_000) as c:
        ok = noise_png(1, shape=(100, 100))
        assert post_files(c, [ok, ok], headers={}).status_code == 200
        assert_error(post_files(c, [ok, ok, ok], headers={}), 413, "30,000 pixels", "20,000")
    assert_still_serving(client)


def test_large_jpegs_decode_in_draft_mode(ckpts) -> None:
    # 4000×3000 = 12 M pixels, over a 1 M limit; in draft mode it decodes at 1/8: 500×375.
    photo = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    )
    jpeg, png = encode(photo, "JPEG", quality=80), encode(photo.resize((400, 300)))
    with make_client(ckpts["cbam_rgb"], max_pixels=1_000_000) as c:
        assert post_files(c, [jpeg], headers={}).status_code == 200
        # No draft mode for other formats: a PNG is judged by its full size.
        big_png = encode(Image.new("RGB", (4000, 3000)))
        assert_error(post_files(c, [big_png], headers={}), 413, "12,000,000 pixels")
        assert post_files(c, [png], headers={}).status_code == 200


def test_oversized_body(ckpts) -> None:
    with make_client(ckpts["cbam"], max_body_bytes=50_000) as c:
        big = noise_png(4, shape=(300, 300))
        assert len(big) > 50_000
        assert_error(post_files(c, [big]), 413, "the limit is 50,000")  # by Content-Length
        # No Content-Length (chunked): enforced while reading.
        chunks = iter([b"x" * 20_000] * 5)
        r = c.post("/predict", content=chunks, headers={"Content-Type": "application/json"})
        assert "content-length" not in {k.lower() for k in r.request.headers}
        assert_error(r, 413, "exceeds the limit of 50,000 bytes")
        assert post_files(c, [noise_png()]).status_code == 200


def test_too_many_images(client: TestClient) -> None:
    blobs = [noise_png(i) for i in range(17)]
    assert_error(post_files(client, blobs), 422, "too many images", "16")
    images = [base64.b64encode(b).decode() for b in blobs]
    assert_error(
        client.post("/predict", json={"images": images}, headers=AUTH), 422, "too many images", "17"
    )
    assert post_files(client, blobs[:16]).status_code == 200


def test_empty_uploads(client: TestClient) -> None:
    assert_error(post_files(client, [b""]), 422, "img0.png", "empty")
    assert_error(client.post("/predict", json={"images": []}, headers=AUTH), 422, "images")
    assert_error(
        client.post("/predict", json={"images": [""]}, headers=AUTH),
        422,
        "images.0",
        "at least 1 character",
    )
    r = client.post(
        "/predict",
        data={"note": "hi"},
        headers=AUTH,
        files=[("other", ("x.png", noise_png(), "image/png"))],
    )
    assert_error(r, 422, "unexpected multipart field", "'note'", "'other'", "'files'")
    r = client.post(
        "/predict",
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"},
        content=b"--x--\r\n",
    )
    assert_error(r, 422, "no images")
    assert_error(client.post("/predict", headers=AUTH), 415, "multipart/form-data")
    assert_still_serving(client)


def test_bad_base64_and_json(client: TestClient) -> None:
    r = client.post("/predict", json={"images": ["not base64!!"]}, headers=AUTH)
    assert_error(r, 422, "images[0]", "not valid base64")
    r = client.post("/predict", json={"images": [base64.b64encode(b"text").decode()]}, headers=AUTH)
    assert_error(r, 422, "images[0]", "not a supported image")
    r = client.post(
        "/predict", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert_error(r, 400, "not valid JSON")
    assert_error(
        client.post("/predict", json={"image": ["x"]}, headers=AUTH), 422, "images", "image"
    )
    assert_error(client.post("/predict", json={"images": "abc"}, headers=AUTH), 422, "images")
    assert_still_serving(client)


def test_wrong_field_and_content_type(client: TestClient) -> None:
    assert_error(post_files(client, [noise_png()], field="file"), 422, "'file'", "'files'")
    r = client.post(
        "/predict",
        data={"files": "text, not a file"},
        headers=AUTH,
        files=[("files", ("a.png", noise_png(), "image/png"))],
    )
    assert_error(r, 422, "file uploads")
    r = client.post("/predict", content=noise_png(), headers={**AUTH, "Content-Type": "image/png"})
    assert_error(r, 415, "image/png", "multipart/form-data")
    r = client.post(
        "/predict", content=b"garbage", headers={**AUTH, "Content-Type": "multipart/form-data"}
    )
    assert_error(r, 400, "multipart")
    assert_error(client.get("/predict"), 405)
    assert_error(client.get("/nope"), 404)
    assert_still_serving(client)


# Security -------------------------------------------------------------------------------------


def test_bearer_token_protects_predict(client: TestClient) -> None:
    assert_error(post_files(client, [noise_png()], headers={}), 401, "missing bearer token")
    r = post_files(client, [noise_png()], headers={"Authorization": "Bearer wrong"})
    assert_error(r, 401, "wrong bearer token")
    assert r.headers["www-authenticate"] == "Bearer"
    assert post_files(client, [noise_png()]).status_code == 200
    # Health, readiness, the description and the page stay open.
    for path in ("/healthz", "/readyz", "/model", "/"):
        assert client.get(path).status_code == 200


def test_predict_is_open_without_a_token(ckpts) -> None:
    with make_client(ckpts["cbam"]) as c:
        assert post_files(c, [noise_png()], headers={}).status_code == 200


def test_reload_refused_without_configured_token(ckpts) -> None:
    with make_client(ckpts["cbam"]) as c:
        assert_error(c.post("/reload", headers=AUTH), 403, "ECAB_SERVE_TOKEN")


def test_reload_needs_the_token(client: TestClient, ckpts) -> None:
    assert_error(client.post("/reload"), 401, "missing bearer token")
    r = client.post(
        "/reload", json={"path": str(ckpts["ecab"])}, headers={"Authorization": "Bearer nope"}
    )
    assert_error(r, 401, "wrong")
    assert client.get("/model").json()["attention"] == "cbam"


def _evil(marker: Path):
    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return Evil()


def test_crafted_pickles_never_run(
    client: TestClient, ckpts, tmp_path: Path, under_root: Path
) -> None:
    marker = tmp_path / "pwned"
    # The payload is live: unpickling it creates the marker file.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_evil(probe))).close()
    assert probe.exists()

    as_weights = under_root / "pickle_as_weights"
    shutil.copytree(ckpts["cbam"], as_weights)
    (as_weights / checkpoint.WEIGHTS).write_bytes(pickle.dumps({"w": _evil(marker)}))
    r = client.post("/reload", json={"path": str(as_weights)}, headers=AUTH)
    assert_error(r, 422, "safetensors", "still serving")

    torch_zip = under_root / "torch_save_as_weights"
    shutil.copytree(ckpts["cbam"], torch_zip)
    torch.save({"w": _evil(marker)}, torch_zip / checkpoint.WEIGHTS)
    assert_error(client.post("/reload", json={"path": str(torch_zip)}, headers=AUTH), 422)

    # A malicious resume state: the service never reads it; the loader refuses it.
    with_state = under_root / "evil_train_state"
    shutil.copytree(ckpts["ecab"], with_state)
    torch.save({"optimizer": _evil(marker)}, with_state / checkpoint.STATE)
    r = client.post("/reload", json={"path": str(with_state)}, headers=AUTH)
    assert r.status_code == 200, r.text
    with pytest.raises(CheckpointError):
        checkpoint.load_train_state(with_state)

    assert not marker.exists(), "code inside a pickle ran"
    assert_still_serving(client)


# Reload ---------------------------------------------------------------------------------------


def test_reload_swaps_models_and_keeps_the_old_on_failure(
    client: TestClient, ckpts, under_root: Path
) -> None:
    r = client.post("/reload", json={"path": str(ckpts["bridge_rgb"])}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["attention"] == "bridge" and r.json()["input_shape"] == [3, 32, 32]
    assert client.get("/model").json()["attention"] == "bridge"
    photo = encode(np.random.default_rng(0).integers(0, 256, (50, 60, 3), dtype=np.uint8))
    pred = post_files(client, [photo]).json()["predictions"][0]
    probs, maps = direct(ckpts["bridge_rgb"], Image.open(io.BytesIO(photo)))
    assert_matches(pred, probs, maps, RGB32.classes)
    assert all(
        set(w) == {"channel", "spatial", "sources"}
        and w["spatial"] is None
        and sum(w["sources"].values()) == pytest.approx(1)  # a bridge gate's source shares
        for w in pred["attention"].values()
    )

    # No body: re-read the current source.
    assert client.post("/reload", headers=AUTH).json()["attention"] == "bridge"

    for bad, words in [
        (under_root / "missing", ("does not exist",)),
        (under_root, ("neither a checkpoint",)),
    ]:
        assert_error(client.post("/reload", json={"path": str(bad)}, headers=AUTH), 422, *words)
    broken = under_root / "broken"
    shutil.copytree(ckpts["cbam"], broken)
    (broken / checkpoint.META).write_text("{")
    assert_error(client.post("/reload", json={"path": str(broken)}, headers=AUTH), 422, "malformed")
    mismatched = under_root / "mismatched"
    shutil.copytree(ckpts["cbam"], mismatched)
    shutil.copy(ckpts["ecab"] / checkpoint.WEIGHTS, mismatched / checkpoint.WEIGHTS)
    assert_error(
        client.post("/reload", json={"path": str(mismatched)}, headers=AUTH), 422, "does not match"
    )
    bad_option = under_root / "bad_option"
    shutil.copytree(ckpts["ecab"], bad_option)
    meta = json.loads((bad_option / checkpoint.META).read_text())
    meta["model"]["attention_kwargs"]["fusion"] = "no-such-fusion"
    (bad_option / checkpoint.META).write_text(json.dumps(meta))
    assert_error(
        client.post("/reload", json={"path": str(bad_option)}, headers=AUTH),
        422,
        "no-such-fusion",
        "still serving",
    )
    assert_error(client.post("/reload", json={"path": 3}, headers=AUTH), 422, "path")
    assert_error(client.post("/reload?force=1", headers=AUTH), 422, "force")
    r = client.post(
        "/reload", content=b"{nope", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert_error(r, 400, "not valid JSON")
    assert client.get("/model").json()["attention"] == "bridge"
    assert post_files(client, [photo]).status_code == 200
    # Two good reloads and five refused: the generation counts the good ones.
    assert client.get("/readyz").json()["generation"] == 2


def test_reload_loads_only_under_the_model_root(client: TestClient, ckpts, tmp_path: Path) -> None:
    outside = make_checkpoint(tmp_path / "elsewhere", "se", FASHION, seed=9)
    r = client.post("/reload", json={"path": str(outside)}, headers=AUTH)
    assert_error(r, 403, "outside the model root")
    escape = client.post("/reload", json={"path": f"../{tmp_path.name}/elsewhere"}, headers=AUTH)
    assert_error(escape, 403, "outside the model root")
    link = ckpts["cbam"].parent / "link-out"
    link.symlink_to(outside, target_is_directory=True)
    try:  # a symbolic link inside the root that leads out of it is outside too
        assert_error(
            client.post("/reload", json={"path": "link-out"}, headers=AUTH), 403, "outside"
        )
    finally:
        link.unlink()
    # A relative path is taken from the root; the answer (with the token) has every detail.
    r = client.post("/reload", json={"path": "ecab"}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "ecab" and r.json()["path"] == str(ckpts["ecab"].resolve())
    assert r.json()["generation"] == 1
    with make_client(None, token=TOKEN) as c:  # no --model, no --model-root: nothing loads
        assert_error(
            c.post("/reload", json={"path": str(ckpts["ecab"])}, headers=AUTH), 403, "no model root"
        )
    with make_client(None, token=TOKEN, model_root=str(tmp_path)) as c:
        r = c.post("/reload", json={"path": "elsewhere"}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert c.get("/readyz").json() == {"status": "ready", "model": "elsewhere", "generation": 1}


def test_reload_checks_the_token_before_the_body(client: TestClient, ckpts) -> None:
    bad = {"Content-Type": "application/json"}
    assert_error(client.post("/reload", content=b"{nope", headers=bad), 401, "missing")
    r = client.post("/reload", content=b"{nope", headers={**bad, "Authorization": "Bearer x"})
    assert_error(r, 401, "wrong")
    assert_error(client.post("/reload?force=1"), 401, "missing")
    with make_client(ckpts["cbam"]) as c:  # no token configured: 403, whatever the body
        assert_error(c.post("/reload", content=b"{nope", headers=bad), 403, "ECAB_SERVE_TOKEN")


def test_experiment_folder_serves_its_best(ckpts, tmp_path: Path) -> None:
    experiment = tmp_path / "runs" / "exp"
    shutil.copytree(ckpts["ecab"], experiment / "best")
    assert resolve_checkpoint(experiment) == experiment / "best"
    assert resolve_checkpoint(ckpts["cbam"]) == ckpts["cbam"]
    with make_client(experiment) as c:
        info = c.get("/model").json()
        assert info["name"] == "exp/best"  # relative to runs/, the folder of experiments
        assert info["attention"] == "ecab"


def test_reload_under_concurrent_load_fails_no_request(client: TestClient, ckpts) -> None:
    png = noise_png(11)
    expected = {
        name: direct(ckpts[name], Image.open(io.BytesIO(png)))
        for name in ("cbam", "ecab", "cbam_rgb")
    }
    stop = threading.Event()
    failures: list[str] = []
    served: set[str] = set()

    def hammer() -> int:
        n = 0
        while not stop.is_set() and n < 400:
            r = post_files(client, [png], "?top_k=10")
            n += 1
            if r.status_code != 200:
                failures.append(r.text)
                continue
            body = r.json()
            served.add(body["model"])
            probs, _ = expected[body["model"]]
            got = {t["index"]: t["probability"] for t in body["predictions"][0]["top"]}
            if any(abs(p - probs[i].item()) > TOL for i, p in got.items()):
                failures.append(f"wrong answer from {body['model']}")
        return n

    with ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(hammer) for _ in range(4)]
        for name in ["ecab", "cbam_rgb", "cbam", "ecab", "cbam_rgb", "cbam"]:
            time.sleep(0.05)
            r = client.post("/reload", json={"path": str(ckpts[name])}, headers=AUTH)
            assert r.status_code == 200, r.text
        stop.set()
        total = sum(run.result(timeout=120) for run in runs)
    assert not failures, failures[:3]
    assert total > 0 and len(served) >= 2


# Micro-batching and the event loop ------------------------------------------------------------


def slow_forward(client: TestClient, seconds: float) -> list[int]:
    """Make every forward pass take `seconds` longer; returns the batch size of each call."""
    calls: list[int] = []

    def hook(module, inputs):
        calls.append(len(inputs[0]))
        time.sleep(seconds)

    client.app.state.service.handle.model.register_forward_pre_hook(hook)
    return calls


def test_concurrent_requests_share_forward_passes(ckpts) -> None:
    samples = (
        fashion_test_images(16)
        if FASHION_DIR.is_dir()
        else [
            (np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8), 0)
            for i in range(16)
        ]
    )
    blobs = [encode(image) for image, _ in samples]
    with make_client(ckpts["cbam"], max_batch=32) as c:
        calls = slow_forward(c, 0.2)
        barrier = threading.Barrier(len(blobs))

        def one(blob: bytes):
            barrier.wait(timeout=30)
            return post_files(c, [blob], "?top_k=10", headers={})

        with ThreadPoolExecutor(len(blobs)) as pool:
            responses = list(pool.map(one, blobs))
    assert all(r.status_code == 200 for r in responses)
    assert sum(calls) == len(blobs)
    assert len(calls) < len(blobs) / 2, f"forward batch sizes: {calls}"
    for blob, r in zip(blobs, responses, strict=True):
        probs, maps = direct(ckpts["cbam"], Image.open(io.BytesIO(blob)))
        assert_matches(r.json()["predictions"][0], probs, maps, FASHION.classes)


def test_batches_respect_max_batch(ckpts) -> None:
    with make_client(ckpts["cbam"], max_batch=4) as c:
        calls = slow_forward(c, 0.05)
        with ThreadPoolExecutor(12) as pool:
            responses = list(
                pool.map(lambda i: post_files(c, [noise_png(i)], headers={}), range(12))
            )
        # One request of 6 images is larger than max_batch: it runs alone.
        assert post_files(c, [noise_png(i) for i in range(6)], headers={}).status_code == 200
    assert all(r.status_code == 200 for r in responses)
    assert max(calls[:-1]) <= 4 and calls[-1] == 6


def test_inference_does_not_block_the_event_loop(ckpts) -> None:
    with make_client(ckpts["cbam"]) as c:
        slow_forward(c, 1.0)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(post_files, c, [noise_png()], "", {})
            time.sleep(0.2)  # the forward pass is now sleeping in the inference thread
            start = time.monotonic()
            assert c.get("/healthz").status_code == 200
            assert c.get("/model").status_code == 200
            elapsed = time.monotonic() - start
            assert not pending.done()
            assert pending.result(timeout=30).status_code == 200
    assert elapsed < 0.5


# Command line ---------------------------------------------------------------------------------


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECAB_SERVE_PORT", "9001")
    monkeypatch.setenv("ECAB_SERVE_MAX_BATCH", "8")
    monkeypatch.setenv("ECAB_SERVE_TOKEN", "from-env")
    settings, level = parse_args(["--model", "runs/x", "--port", "9002", "--log-level", "debug"])
    assert settings.model == "runs/x" and settings.port == 9002 and settings.max_batch == 8
    assert settings.host == "127.0.0.1"
    assert settings.token is not None and settings.token.get_secret_value() == "from-env"
    assert level == "debug"
    with pytest.raises(SystemExit):
        parse_args(["--max-batch", "0"])


def test_blank_token_means_no_token(ckpts, monkeypatch: pytest.MonkeyPatch) -> None:
    # docker-compose passes ECAB_SERVE_TOKEN="" when the user set none.
    monkeypatch.setenv("ECAB_SERVE_TOKEN", "  ")
    settings, _ = parse_args(["--model", str(ckpts["cbam"])])
    assert settings.token is None
    with make_client(ckpts["cbam"]) as c:
        assert post_files(c, [noise_png(1)], headers={}).status_code == 200


def test_only_small_images_are_decoded_on_the_event_loop(client: TestClient) -> None:
    from serve.decoding import INLINE_DECODE_PIXELS

    decoder = client.app.state.service.decoder
    threads: list[str] = []
    real = decoder._convert

    def recording(*args):
        threads.append(threading.current_thread().name)
        return real(*args)

    decoder._convert = recording
    loop_thread = client.portal.call(lambda: threading.current_thread().name)
    assert 28 * 28 <= INLINE_DECODE_PIXELS < 200 * 200
    assert post_files(client, [noise_png(0)]).status_code == 200
    assert post_files(client, [noise_png(0, shape=(200, 200))]).status_code == 200
    # A bomb's header is read on the loop and refused there: its pixels are never allocated.
    assert_error(post_files(client, [png_claiming(100_000, 100_000)]), 413, "decompression")
    assert len(threads) == 2
    assert threads[0] == loop_thread and threads[1] != loop_thread


def test_settings_travel_to_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ServeSettings(
        model="runs/x",
        port=9100,
        max_wait_ms=1.5,
        token="s3cret",
        workers=2,
        state_dir="/tmp/state",
        worker_index=1,
    )
    assert pickle.loads(pickle.dumps(settings)) == settings  # how the fork server hands them over
    # Workers share the cores: each leaves the others (and its event loop) theirs.
    assert ServeSettings(workers=4).inference_threads() == max(1, (os.cpu_count() or 2) // 4 - 1)


def test_workers_agree_on_concurrent_reloads_and_report_a_failed_follow(
    ckpts, under_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers' services in one event loop, sharing a state folder as --workers do."""
    import asyncio

    import serve.service
    import serve.worker_sync
    from serve.metrics import Metrics
    from serve.service import Service

    monkeypatch.setattr(serve.worker_sync, "POLL_S", 0.05)
    monkeypatch.setattr(serve.service, "STALE_S", 0.5)
    state = under_root / "state"
    state.mkdir()
    doomed = under_root / "doomed"
    shutil.copytree(ckpts["cbam_rgb"], doomed)

    def service(index: int) -> Service:
        return Service(
            ServeSettings(
                model=str(ckpts["cbam"]),
                workers=2,
                state_dir=str(state),
                worker_index=index,
                threads=1,
            ),
            Metrics(),
        )

    async def settle(*services: Service) -> None:
        for _ in range(200):
            behind = [s.sync.behind(s.generation) for s in services]
            if all(n is None or n == s.sync.failed for n, s in zip(behind, services, strict=True)):
                return
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        a, b = service(0), service(1)
        await a.start()
        await b.start()
        try:
            # Reloads arriving at both workers at once run one after another, numbered 1, 2.
            infos = await asyncio.gather(
                a.reload(str(ckpts["ecab"])), b.reload(str(ckpts["bridge_rgb"]))
            )
            assert sorted(i.generation for i in infos) == [1, 2]
            await settle(a, b)
            last = max(infos, key=lambda i: i.generation)
            assert a.generation == b.generation == 2
            assert a.handle.path == b.handle.path == Path(last.path)
            assert a.readiness().status == b.readiness().status == "ready"
            # Every worker's generation, from their heartbeats.
            await asyncio.sleep(1.2)
            assert [(w.index, w.generation, w.ready) for w in a.readiness().workers] == [
                (0, 2, True),
                (1, 2, True),
            ]
            # A reload the other worker cannot follow: it keeps serving, but is not ready.
            await a.reload(str(doomed))
            shutil.rmtree(doomed)
            await settle(b)
            assert b.generation == 2 and b.handle.path == Path(last.path)
            ready = b.readiness()
            assert ready.status == "not ready" and "reload 3" in ready.reason
            assert "failed" in ready.reason and a.readiness().status == "ready"
            # The next good reload brings it back.
            await a.reload(str(ckpts["cbam"]))
            await settle(b)
            assert b.generation == 4 and b.readiness().status == "ready"
            # A worker whose heartbeat stopped (it died or hangs) is listed as not ready.
            await b.sync.stop()
            await asyncio.sleep(0.6)
            assert [w.ready for w in a.readiness().workers] == [True, False]
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(scenario())
