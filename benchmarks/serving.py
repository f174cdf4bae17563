"""Latency and throughput of the real server against model-only forward time, same machine.

    python benchmarks/serving.py                      # resnet20 + bridge, random weights, 1×28×28
    python benchmarks/serving.py --model runs/<name>  # a real checkpoint or experiment
    python benchmarks/serving.py --cam --figure cam.png  # and /predict?cam=true side by side

Starts `python -m serve` on a free loopback port, sends single-image PNG requests (multipart,
default query: top-5 and attention weights) at each concurrency, from wrk when it is installed
(Debian's `wrk`: a C client that leaves the server its cores) for `--seconds`, else `--requests`
from an httpx async client, and measures, in the same run, the model's own forward time at
batch 1 and batch `--max-batch`. Targets: p50 at concurrency 1 ≤ 1.5× the model-only batch-1
latency; throughput at 32 clients ≥ 3× the sequential one; zero errors. Exits 1 on any failed
request. With `--cam`, every measurement is repeated with `?cam=true` (Grad-CAM: one backward
pass) and shown side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from ecab_tune import checkpoint
from ecab_tune.checkpoint import Meta
from ecab_tune.data import image_to_uint8
from ecab_tune.data.sources import DEBIAN_FASHION_MNIST, FASHION_MNIST, read_idx
from ecab_tune.models import ModelConfig
from ecab_tune.models.inference import forward_with_attention
from serve.__main__ import parse_args
from serve.model import load_handle, resolve_checkpoint
from serve.testing import server_process, wait_for_workers

FASHION_DIR, FASHION = DEBIAN_FASHION_MNIST, FASHION_MNIST


def random_checkpoint(folder: Path, arch: str, attention: str) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(arch, attention, {}, width=1.0, num_classes=10, in_chans=1)
    return checkpoint.save(folder, cfg.build().eval(), Meta(cfg, FASHION))


def sample_images(n: int, channels: int, size: tuple[int, int]) -> list[bytes]:
    """Real Fashion-MNIST test images when present, else noise; PNG-encoded."""
    if FASHION_DIR.is_dir() and channels == 1 and size == (28, 28):
        arrays = read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz", 3)[:n]
    else:
        shape = (n, *size) if channels == 1 else (n, *size, channels)
        arrays = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = []
    for a in arrays:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def model_only(folder: Path, pngs: list[bytes], batch: int, repeats: int) -> tuple[float, float]:
    """(median batch-1 forward latency in s, forward throughput at `batch` in images/s)."""
    model, meta = checkpoint.load_model(folder)
    d = meta.data
    uint8 = torch.stack(
        [
            image_to_uint8(Image.open(io.BytesIO(p)), d.channels, size=(d.height, d.width))
            for p in pngs
        ]
    )
    big = uint8.repeat((batch + len(uint8) - 1) // len(uint8), 1, 1, 1)[:batch]
    with torch.inference_mode():
        for _ in range(10):
            forward_with_attention(model, uint8[:1], d, attention=False)
        one = []
        for i in range(repeats):
            x = uint8[i % len(uint8)].unsqueeze(0)
            t = time.perf_counter()
            forward_with_attention(model, x, d, attention=False)
            one.append(time.perf_counter() - t)
        forward_with_attention(model, big, d, attention=False)
        rounds = max(3, repeats // batch)
        t = time.perf_counter()
        for _ in range(rounds):
            forward_with_attention(model, big, d, attention=False)
        throughput = rounds * batch / (time.perf_counter() - t)
    return statistics.median(one), throughput


def handle_latency(folder: Path, pngs: list[bytes], batch: int, repeats: int, cam: bool) -> float:
    """Median seconds of the service's own `predict` (attention on) at `batch`, with or without
    the CAM: the cost of the map without HTTP around it."""
    handle = load_handle(folder)
    d = handle.meta.data
    uint8 = torch.stack(
        [image_to_uint8(Image.open(io.BytesIO(p)), d.channels, (d.height, d.width)) for p in pngs]
    )
    x = uint8.repeat((batch + len(uint8) - 1) // len(uint8), 1, 1, 1)[:batch]
    for _ in range(5):
        handle.predict(x, 5, True, cam)
    times = []
    for _ in range(max(5, repeats // batch)):
        t = time.perf_counter()
        handle.predict(x, 5, True, cam)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cam_figure(rows: dict[str, tuple[float, float]], path: Path, title: str) -> None:
    """One side-by-side bar chart: each measurement without and with `cam=true`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    names = list(rows)
    pos = np.arange(len(names))
    for i, (label, colour) in enumerate((("cam=false", "#8da0cb"), ("cam=true", "#fc8d62"))):
        values = [rows[n][i] for n in names]
        bars = ax.bar(pos + (i - 0.5) * 0.38, values, 0.38, label=label, color=colour)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(pos, names, fontsize=8)
    ax.set_ylabel("ms (median)")
    ax.set_title(title, fontsize=9)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


async def load(
    url: str, pngs: list[bytes], concurrency: int, requests: int, query: str = ""
) -> dict[str, float]:
    """`requests` requests from `concurrency` clients; latency percentiles and throughput."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def run(count: int) -> tuple[list[float], int, float]:
            todo = iter(range(count))  # shared by the clients: each request is sent once
            latencies: list[float] = []
            errors = 0

            async def client() -> None:
                nonlocal errors
                for i in todo:
                    files = [("files", (f"{i}.png", pngs[i % len(pngs)], "image/png"))]
                    t = time.perf_counter()
                    try:
                        ok = (await http.post(f"/predict{query}", files=files)).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    latencies.append(time.perf_counter() - t)
                    errors += not ok

            t = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            return latencies, errors, time.perf_counter() - t

        # Warm-up (opens the connections, fills the caches); its failures count too.
        _, warm_errors, _ = await run(4 * concurrency)
        latencies, errors, wall = await run(requests)
        errors += warm_errors
    qs = np.quantile(latencies, [0.5, 0.99])
    return {
        "p50": float(qs[0]),
        "p99": float(qs[1]),
        "throughput": requests / wall,
        "errors": errors,
    }


WRK_SCRIPT = """local f = io.open(%r, "rb"); wrk.body = f:read("*all"); f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=%s"
"""
_WRK_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def load_wrk(
    url: str, png: bytes, concurrency: int, seconds: int, tmp: Path, query: str = ""
) -> dict[str, float]:
    """The same request from wrk (C, one thread): a load generator that leaves the server
    its cores, where the Python client spends as much CPU per request as the server does."""
    boundary = "ecab-benchmark-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
        f'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()
    (tmp / "body").write_bytes(body + png + f"\r\n--{boundary}--\r\n".encode())
    (tmp / "post.lua").write_text(WRK_SCRIPT % (str(tmp / "body"), boundary))
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(tmp / "post.lua"),
            f"{url}/predict{query}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    latency = {int(q): float(v) * _UNIT[u] for q, v, u in _WRK_LATENCY.findall(out)}
    # "Socket errors: connect 0, read 0, write 0, timeout 0" and "Non-2xx or 3xx responses: N"
    errors = sum(
        int(n)
        for line in out.splitlines()
        if line.strip().startswith(("Socket errors:", "Non-2xx"))
        for n in re.findall(r"\d+", line.split(":", 1)[1])
    )
    return {
        "p50": latency[50],
        "p99": latency[99],
        "throughput": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", help="checkpoint or experiment folder (default: random weights)")
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--attention", default="bridge")
    p.add_argument("--requests", type=int, default=200, help="measured requests per concurrency")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=200, help="model-only timing repeats")
    p.add_argument(
        "--client",
        choices=("auto", "wrk", "httpx"),
        default="auto",
        help="load generator: wrk (Debian's; auto uses it when installed) or httpx",
    )
    p.add_argument("--seconds", type=int, default=10, help="wrk: seconds per concurrency")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="server processes (default: one per core; see README, Serving)",
    )
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra `python -m serve` flag (repeatable), e.g. --server-arg=--threads=2",
    )
    p.add_argument("--cam", action="store_true", help="also measure /predict?cam=true")
    p.add_argument("--figure", type=Path, help="with --cam: write the side-by-side chart here")
    args = p.parse_args(argv)
    server_args = ["--workers", str(args.workers), *args.server_arg]

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or random_checkpoint(Path(tmp) / "ckpt", args.arch, args.attention)
        # A blank token: /predict is open whatever the environment says.
        with server_process(
            model,
            env={"ECAB_SERVE_TOKEN": ""},
            args=["--max-batch", str(args.max_batch), *server_args],
            timeout=120,
            output=None,
            stop_timeout=20,
        ) as (url, _):
            wait_for_workers(url, args.workers, timeout=120)
            # Time exactly the checkpoint the server serves (an experiment's best/, say).
            folder = resolve_checkpoint(model)
            meta = checkpoint.read_meta(folder)
            d = meta.data
            pngs = sample_images(64, d.channels, (d.height, d.width))
            # Model-only timings with the server's own intra-op thread count: like for like.
            settings, _ = parse_args(["--model", str(model), *server_args])
            torch.set_num_threads(settings.inference_threads())
            one, batch_tp = model_only(folder, pngs, args.max_batch, args.repeats)
            print(
                f"model: {meta.model.name} + {meta.model.attention}, input "
                f"{d.channels}×{d.height}×{d.width}; server: {settings.workers} worker(s) × "
                f"{torch.get_num_threads()} torch thread(s); {os.cpu_count()} CPUs"
            )
            print(
                f"model-only: batch-1 latency {one * 1e3:.2f} ms ({1 / one:.0f} img/s); "
                f"batch-{args.max_batch} throughput {batch_tp:.0f} img/s"
            )
            wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
            print(f"load generator: {'wrk' if wrk else 'httpx (Python, async)'}")

            def measure(c: int, query: str = "") -> dict[str, float]:
                if wrk:
                    return load_wrk(url, pngs[0], c, args.seconds, Path(tmp), query)
                return asyncio.run(load(url, pngs, c, args.requests, query))

            results = {c: measure(c) for c in args.concurrency}
            cam_results = {c: measure(c, "?cam=true") for c in args.concurrency} if args.cam else {}
            if args.cam:
                cam_rows = {
                    f"predict() batch {b}": tuple(
                        handle_latency(folder, pngs, b, args.repeats, cam) * 1e3
                        for cam in (False, True)
                    )
                    for b in (1, args.max_batch)
                } | {
                    f"HTTP p50, {c} client{'s' * (c > 1)}": (
                        results[c]["p50"] * 1e3,
                        cam_results[c]["p50"] * 1e3,
                    )
                    for c in args.concurrency
                }

    header = ("clients", "p50 ms", "p99 ms", "req/s", "errors")
    print("\n" + " ".join(f"{h:>9}" for h in header))
    for c, r in results.items():
        print(
            f"{c:>9} {r['p50'] * 1e3:>9.2f} {r['p99'] * 1e3:>9.2f} "
            f"{r['throughput']:>9.0f} {r['errors']:>9}"
        )
    ok = True
    lo, hi = min(results), max(results)
    ratio = results[lo]["p50"] / one
    print(f"\np50 at {lo} client(s) / model-only batch-1 latency: {ratio:.2f}× (target ≤ 1.5×)")
    ok &= ratio <= 1.5
    if hi != lo:
        gain = results[hi]["throughput"] / results[lo]["throughput"]
        print(f"throughput at {hi} clients / at {lo}: {gain:.2f}× (target ≥ 3×)")
        print(
            f"throughput at {hi} clients / model-only batch-{args.max_batch}: "
            f"{results[hi]['throughput'] / batch_tp:.2f}×"
        )
        ok &= gain >= 3
    if args.cam:
        print(f"\n{'with attention, ms (median)':<28} {'cam=false':>10} {'cam=true':>10} {'×':>6}")
        for name, (off, on) in cam_rows.items():
            print(f"{name:<28} {off:>10.2f} {on:>10.2f} {on / off:>6.2f}")
        if args.figure:
            title = (
                f"cost of cam=true: {meta.model.name} + {meta.model.attention}, "
                f"{d.channels}×{d.height}×{d.width}, {torch.get_num_threads()} thread(s)"
            )
            cam_figure(cam_rows, args.figure, title)
            print(f"figure: {args.figure}")
    errors = sum(r["errors"] for r in [*results.values(), *cam_results.values()])
    print(f"errors: {errors} (target 0); targets {'met' if ok and not errors else 'MISSED'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
