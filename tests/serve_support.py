"""Helpers shared by the serve tests: tiny checkpoints, encoded images, reference answers.

A real server process for a test is `serve.testing`'s.
"""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi.testclient import TestClient
from PIL import Image

from ecab_tune import checkpoint
from ecab_tune.checkpoint import Meta
from ecab_tune.data import DataInfo, image_to_uint8
from ecab_tune.data.sources import DEBIAN_FASHION_MNIST, FASHION_MNIST, read_idx
from ecab_tune.models import ModelConfig
from ecab_tune.models.inference import forward_with_attention
from serve.app import create_app
from serve.settings import ServeSettings

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token"

AUTH = {"Authorization": f"Bearer {TOKEN}"}

TOL = 1e-5

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; playwright drives it, no browser download
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FASHION_DIR, FASHION = DEBIAN_FASHION_MNIST, FASHION_MNIST
FASHION_CLASSES = FASHION.classes
RGB32 = DataInfo(
    name="rgb32",
    classes=tuple(f"class{k}" for k in range(10)),
    channels=3,
    height=32,
    width=32,
    mean=(0.49, 0.48, 0.45),
    std=(0.25, 0.24, 0.26),
    crop_padding=4,
    flip=True,
)


def make_checkpoint(
    folder: Path,
    attention: str = "cbam",
    data: DataInfo = FASHION,
    arch: str = "resnet8",
    width: float = 0.25,
    seed: int = 0,
    attention_kwargs: dict[str, Any] | None = None,
) -> Path:
    """A tiny random-weight model saved in the one checkpoint format, with search metadata."""
    torch.manual_seed(seed)
    cfg = ModelConfig(
        arch,
        attention,
        attention_kwargs or {},
        width=width,
        num_classes=len(data.classes),
        in_chans=data.channels,
    )
    model = cfg.build().eval()
    _randomise_batchnorm(model, seed)
    meta = Meta(
        cfg,
        data,
        metrics={"val_acc": 0.5, "test_acc": 0.25, "seed": seed},
        extra={"space": "test", "params": {"lr": 0.1, "attention": attention}},
    )
    return checkpoint.save(folder, model, meta)


def _randomise_batchnorm(model: torch.nn.Module, seed: int) -> None:
    # Fresh BatchNorm statistics are the identity; random ones make outputs differ per seed.
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def encode(image: Image.Image | np.ndarray, fmt: str = "PNG", **kw: Any) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def direct(folder: Path, image: Image.Image) -> tuple[torch.Tensor, dict[str, dict[str, Any]]]:
    """Reference answer without the service: probabilities and attention of one image."""
    model, meta = checkpoint.load_model(folder)
    d = meta.data
    x = image_to_uint8(image, d.channels, size=(d.height, d.width)).unsqueeze(0)
    with torch.inference_mode():
        logits, captured = forward_with_attention(model, x, d)
        probs = torch.softmax(logits.float(), dim=1)[0]
    maps = {n: {k: t[0].tolist() for k, t in out.items()} for n, out in captured.items()}
    return probs, maps


def fashion_test_images(n: int) -> list[tuple[np.ndarray, int]]:
    """The first n Fashion-MNIST test images (28×28 uint8) with labels, from Debian's files."""
    images = read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz", 3)
    labels = read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz", 1)
    return [(images[i].copy(), int(labels[i])) for i in range(n)]


def sample_png(seed: int = 0) -> bytes:
    """A Fashion-MNIST test image when present, else noise of its shape; PNG."""
    if FASHION_DIR.is_dir():
        return encode(fashion_test_images(seed + 1)[seed][0])
    return encode(np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8))


def noise_png(seed: int = 0, shape=(28, 28), mode: str | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
    return encode(image.convert(mode) if mode else image)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width×height pixels (a decompression bomb's shape)."""
    png = bytearray(encode(Image.new("L", (1, 1))))
    ihdr = bytes(png[12:16]) + width.to_bytes(4, "big") + height.to_bytes(4, "big") + png[24:29]
    png[16:24] = ihdr[4:12]
    png[29:33] = zlib.crc32(ihdr).to_bytes(4, "big")
    return bytes(png)


def jpeg_with_scans(extra: int, side: int = 1024) -> bytes:
    """A valid progressive grey JPEG followed by `extra` empty AC scans, each a 12-byte
    end-of-band run over every block: libjpeg decodes them all, a pass over the image each."""
    noise = np.random.default_rng(0).integers(0, 256, (side, side), dtype=np.uint8)
    body = encode(noise, "JPEG", progressive=True, quality=50)[:-2]  # without its end marker
    table = b"\xff\xc4" + struct.pack(">H", 20) + b"\x10" + bytes([1] + [0] * 15) + b"\xe0"
    scan = b"\xff\xda" + struct.pack(">H", 8) + b"\x01\x01\x00\x01\x3f\x00"
    runs = (side // 8) ** 2 >> 14  # code "0" + 14 zero bits: a run of 2^14 blocks
    assert runs and (side // 8) ** 2 % (1 << 14) == 0
    bits = "0" * 15 * runs
    bits += "1" * (-len(bits) % 8)
    coded = int(bits, 2).to_bytes(len(bits) // 8, "big")
    return body + table + (scan + coded) * extra + b"\xff\xd9"


def make_client(model: Path | None, **settings) -> TestClient:
    app = create_app(ServeSettings(model=None if model is None else str(model), **settings))
    return TestClient(app)


def post_files(
    client: TestClient, blobs: list[bytes], query: str = "", headers=AUTH, field: str = "files"
):
    files = [(field, (f"img{i}.png", blob, "image/png")) for i, blob in enumerate(blobs)]
    return client.post(f"/predict{query}", files=files, headers=headers)


def post(client: TestClient, seed: int = 0, **kw):
    return client.post("/predict", files=[("files", ("x.png", noise_png(seed), "image/png"))], **kw)


def concurrently(client: TestClient, n: int) -> list:
    barrier = threading.Barrier(n)

    def one(i: int):
        barrier.wait(timeout=30)
        return post(client, i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def predict(ckpt: Path, blobs: list[bytes], query: str) -> list[dict]:
    with TestClient(create_app(ServeSettings(model=str(ckpt)))) as client:
        files = [("files", (f"{i}.png", b, "image/png")) for i, b in enumerate(blobs)]
        r = client.post(f"/predict{query}", files=files)
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def slow_forward(client: TestClient, seconds: float) -> list[int]:
    """Make every forward pass take `seconds` longer; returns the batch size of each call."""
    calls: list[int] = []

    def hook(module, inputs):
        calls.append(len(inputs[0]))
        time.sleep(seconds)

    client.app.state.service.handle.model.register_forward_pre_hook(hook)
    return calls


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
