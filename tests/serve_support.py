"""Helpers shared by the serve tests: tiny checkpoints, encoded images, a real server process."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image

from ecab_tune import checkpoint
from ecab_tune.checkpoint import Meta
from ecab_tune.data import DataInfo, image_to_uint8, preprocess
from ecab_tune.data.sources import DEBIAN_FASHION_MNIST, FASHION_MNIST, read_idx
from ecab_tune.models import ModelConfig, capture_attention

ROOT = Path(__file__).resolve().parents[1]
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
    with torch.inference_mode(), capture_attention(model) as captured:
        probs = torch.softmax(model(preprocess(x, d)).float(), dim=1)[0]
    maps = {n: {k: t[0].tolist() for k, t in out.items()} for n, out in captured.items()}
    return probs, maps


def fashion_test_images(n: int) -> list[tuple[np.ndarray, int]]:
    """The first n Fashion-MNIST test images (28×28 uint8) with labels, from Debian's files."""
    images = read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz", 3)
    labels = read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz", 1)
    return [(images[i].copy(), int(labels[i])) for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(
    model: Path,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    timeout: float = 60.0,
) -> Iterator[str]:
    """`python -m serve` on a free loopback port; yields its base URL; always stops it."""
    with server_process(model, env, args, timeout) as (url, _):
        yield url


def worker_pids(supervisor: int) -> set[int]:
    """The `--workers` processes a supervisor has now: the children of its fork server."""

    def children(pid: int | str) -> list[str]:
        tasks = Path(f"/proc/{pid}/task").glob("*/children")
        return " ".join(task.read_text() for task in tasks).split()

    pids: set[int] = set()
    for child in children(supervisor):
        with contextlib.suppress(FileNotFoundError):
            if b"forkserver" in Path(f"/proc/{child}/cmdline").read_bytes():
                pids.update(int(worker) for worker in children(child))
    return pids


@contextlib.contextmanager
def server_process(
    model: Path,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    timeout: float = 60.0,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """As `server`, and the process too."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "serve",
        "--model",
        str(model),
        "--port",
        str(port),
        "--log-level",
        "warning",
        *args,
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise RuntimeError(f"server exited with {proc.returncode}:\n{out}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready on {url} after {timeout:.0f} s")
            time.sleep(0.1)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        if proc.stdout:
            proc.stdout.close()
