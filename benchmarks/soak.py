"""The service under abuse and past capacity, on loopback: the checks of issue #14, then a soak.

    python benchmarks/soak.py                  # checks, then a 10-minute soak, 2 workers
    python benchmarks/soak.py --minutes 0      # the checks only

Starts `python -m serve --workers N` on a free 127.0.0.1 port with a tiny random-weight model
(resnet8 + CBAM, 1×28×28: the model is not what is measured here), then:

checks  1. one 2.5 MB request of 16 black 6300×6300 RGBA PNGs: its status, time, and every
           worker's RSS and peak RSS before and after; then 4 requests at once, each at the
           request budget (4 RGBA images of 12 MP): their time and the peak RSS growth;
        2. 100 uploads that send headers and 1 byte of a 1 MB body: how long until the server
           has closed them all, while a client keeps asking for predictions;
        3. a worker SIGKILLed, its replacement SIGKILLed 1 s after it was spawned: failed
           requests meanwhile and the time until every worker is ready again;
        4. GET /metrics: Prometheus text.
soak    --minutes of: `--clients` clients sending good PNGs (each pausing --think-ms between
        requests), malformed bodies, images at the pixel limit, `--slow` uploads trickling a
        byte every 5 s, a reload every 30 s and a worker SIGKILLed every 2 minutes. Reports
        requests by status, p50/p99 of the good ones, max RSS per worker, RSS growth (the
        workers' largest RSS in the last minute vs the first), and 5xx other than 503/504.

Prints a JSON summary and writes it to --out. Exits 1 if a check or the soak fails its target.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import io
import json
import os
import random
import signal
import socket
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
from ecab_tune.data import DataInfo
from ecab_tune.models import ModelConfig
from serve.testing import HOST, ROOT, server_process, wait_for_workers, worker_pids

TOKEN = "soak-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STALLED_HEAD = (
    b"POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    + TOKEN.encode()
    + b"\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{"
)  # headers and 1 byte of a 1 MB body
DATA = DataInfo(
    name="noise",
    classes=tuple(f"c{k}" for k in range(10)),
    channels=1,
    height=28,
    width=28,
    mean=(0.5,),
    std=(0.25,),
    crop_padding=0,
    flip=False,
)


def make_model(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    cfg = ModelConfig("resnet8", "cbam", {}, width=0.25, num_classes=10, in_chans=1)
    return checkpoint.save(folder, cfg.build().eval(), Meta(cfg, DATA))


def png(array: np.ndarray | Image.Image) -> bytes:
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def multipart(blobs: list[bytes]) -> tuple[bytes, str]:
    boundary = "soakboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + blob
        + b"\r\n"
        for i, blob in enumerate(blobs)
    ]
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# The server and its workers -------------------------------------------------------------------


def rss_mb(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) of a process in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


# Checks -----------------------------------------------------------------------------------------


def check_bomb(url: str, supervisor: int) -> dict:
    black = png(Image.new("RGBA", (6300, 6300)))
    body, kind = multipart([black] * 16)
    pids = worker_pids(supervisor)
    before = {p: rss_mb(p) for p in pids}
    start = time.monotonic()
    headers = {"Content-Type": kind, **AUTH}
    r = httpx.post(f"{url}/predict", content=body, headers=headers, timeout=120)
    seconds = time.monotonic() - start
    time.sleep(0.5)
    after = {p: rss_mb(p) for p in pids}
    return {
        "body_mb": round(len(body) / 2**20, 2),
        "status": r.status_code,
        "detail": r.json().get("detail"),
        "seconds": round(seconds, 3),
        "rss_growth_mb": max(round(after[p][0] - before[p][0], 1) for p in pids),
        "peak_rss_growth_mb": max(round(after[p][1] - before[p][1], 1) for p in pids),
    }


def check_at_limit(url: str, supervisor: int, parallel: int = 4) -> dict:
    """Requests within every limit (4 RGBA images of 12 MP each: the request budget), several
    at once: what they cost in time and in the workers' peak RSS."""
    body, kind = multipart([png(Image.new("RGBA", (4000, 3000)))] * 4)
    headers = {"Content-Type": kind, **AUTH}
    pids = worker_pids(supervisor)
    before = {p: rss_mb(p) for p in pids}

    async def burst() -> list[tuple[int, float]]:
        async with httpx.AsyncClient(timeout=120) as http:

            async def one() -> tuple[int, float]:
                start = time.monotonic()
                r = await http.post(f"{url}/predict", content=body, headers=headers)
                return r.status_code, time.monotonic() - start

            return await asyncio.gather(*(one() for _ in range(parallel)))

    results = asyncio.run(burst())
    after = {p: rss_mb(p) for p in pids}
    return {
        "requests": parallel,
        "statuses": sorted(status for status, _ in results),
        "max_seconds": round(max(seconds for _, seconds in results), 2),
        "peak_rss_growth_mb": max(round(after[p][1] - before[p][1], 1) for p in pids),
        "rss_growth_mb": max(round(after[p][0] - before[p][0], 1) for p in pids),
    }


def check_stalled_uploads(url: str, port: int, n: int = 100) -> dict:
    good = png(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8))
    socks = []
    for _ in range(n):
        s = socket.create_connection((HOST, port), timeout=60)
        s.sendall(STALLED_HEAD)
        s.setblocking(False)
        socks.append(s)
    start = time.monotonic()
    closed: dict[int, float] = {}
    answered = failed = 0
    while len(closed) < n and time.monotonic() - start < 60:
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                while s.recv(65536):
                    pass
                closed[i] = time.monotonic() - start  # b"": the server closed it
            except BlockingIOError:
                pass
            except OSError:
                closed[i] = time.monotonic() - start
        try:
            r = httpx.post(
                f"{url}/predict",
                files=[("files", ("a.png", good, "image/png"))],
                headers=AUTH,
                timeout=10,
            )
            answered += r.status_code == 200
            failed += r.status_code != 200
        except httpx.TransportError:
            failed += 1
        time.sleep(0.05)
    for s in socks:
        s.close()
    return {
        "stalled": n,
        "closed_by_server": len(closed),
        "all_closed_after_s": round(max(closed.values()), 2) if len(closed) == n else None,
        "good_answered_meanwhile": answered,
        "good_failed_meanwhile": failed,
    }


def check_double_kill(url: str, supervisor: int, workers: int) -> dict:
    good = png(np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8))
    outcomes: collections.Counter[str] = collections.Counter()
    stop = False

    async def hammer() -> None:
        async with httpx.AsyncClient(timeout=10, headers=AUTH) as http:
            while not stop:
                try:
                    r = await http.post(
                        f"{url}/predict", files=[("files", ("a.png", good, "image/png"))]
                    )
                    outcomes[str(r.status_code)] += 1
                except httpx.TransportError as exc:
                    outcomes[type(exc).__name__] += 1
                await asyncio.sleep(0.02)

    async def scenario() -> float:
        nonlocal stop
        task = asyncio.create_task(hammer())
        await asyncio.sleep(1)
        first = worker_pids(supervisor)
        victim = min(first)
        start = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        while not (worker_pids(supervisor) - first):
            await asyncio.sleep(0.02)
        (restarted,) = worker_pids(supervisor) - first
        await asyncio.sleep(1.0)
        os.kill(restarted, signal.SIGKILL)
        await asyncio.to_thread(
            wait_for_workers, url, workers, AUTH, {victim, restarted}, timeout=120
        )
        back = time.monotonic() - start
        await asyncio.sleep(1)
        stop = True
        await task
        return back

    back = asyncio.run(scenario())
    return {"full_strength_after_s": round(back, 2), "requests": dict(outcomes)}


def check_metrics(url: str) -> dict:
    r = httpx.get(f"{url}/metrics", timeout=10)
    return {
        "status": r.status_code,
        "content_type": r.headers.get("content-type"),
        "has_requests_total": "ecab_serve_requests_total" in r.text,
    }


# Soak -------------------------------------------------------------------------------------------


async def soak(url: str, port: int, supervisor: int, runs: Path, args: argparse.Namespace) -> dict:
    end = time.monotonic() + args.minutes * 60
    rng = np.random.default_rng(2)
    goods = [png(rng.integers(0, 256, (28, 28), dtype=np.uint8)) for _ in range(16)]
    at_limit = png(Image.new("L", (4000, 3000)))  # 12 M pixels: exactly the default limit
    valid = goods[0]
    malformed = [
        ({"Content-Type": "application/json"}, b"{not json"),
        ({"Content-Type": "application/json"}, b'{"images": ["not base64!!"]}'),
        ({"Content-Type": "image/png"}, valid),
        ({"Content-Type": "multipart/form-data; boundary=x"}, b"garbage"),
        ({"Content-Type": multipart([b"hello"])[1]}, multipart([b"hello"])[0]),
        (
            {"Content-Type": multipart([valid[: len(valid) // 2]])[1]},
            multipart([valid[: len(valid) // 2]])[0],
        ),
        ({"Content-Type": multipart([valid] * 17)[1]}, multipart([valid] * 17)[0]),
    ]
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    latencies: list[float] = []
    rss: dict[int, list[tuple[float, float]]] = collections.defaultdict(list)
    events: list[str] = []
    t0 = time.monotonic()

    async def send(http: httpx.AsyncClient, kind: str, **kw) -> None:
        start = time.monotonic()
        try:
            r = await http.post(f"{url}/predict", **kw)
            counts[kind][str(r.status_code)] += 1
            if kind == "good" and r.status_code == 200:
                latencies.append(time.monotonic() - start)
        except httpx.TransportError as exc:
            counts[kind][type(exc).__name__] += 1

    async def good_client(i: int) -> None:
        async with httpx.AsyncClient(timeout=60, headers=AUTH) as http:
            while time.monotonic() < end:
                blob = goods[i % len(goods)]
                await send(http, "good", files=[("files", ("g.png", blob, "image/png"))])
                await asyncio.sleep(args.think_ms / 1000)

    async def bad_client() -> None:
        async with httpx.AsyncClient(timeout=60, headers=AUTH) as http:
            while time.monotonic() < end:
                headers, body = random.choice(malformed)
                await send(http, "malformed", content=body, headers=headers)
                await asyncio.sleep(0.2)

    async def limit_client() -> None:
        async with httpx.AsyncClient(timeout=60, headers=AUTH) as http:
            while time.monotonic() < end:
                await send(http, "at_limit", files=[("files", ("big.png", at_limit, "image/png"))])
                await asyncio.sleep(2.0)

    async def slow_upload() -> None:
        while time.monotonic() < end:
            try:
                reader, writer = await asyncio.open_connection(HOST, port)
                writer.write(STALLED_HEAD)
                while time.monotonic() < end and not reader.at_eof():
                    await writer.drain()
                    try:
                        head = await asyncio.wait_for(reader.read(4096), 5.0)
                    except asyncio.TimeoutError:
                        writer.write(b" ")  # one byte every 5 s: under the read timeout
                        continue
                    if head:
                        counts["slow"][head.split(b" ", 2)[1].decode()] += 1
                    break
                writer.close()
            except (OSError, IndexError) as exc:
                counts["slow"][type(exc).__name__] += 1
                await asyncio.sleep(1)

    async def reloader() -> None:
        async with httpx.AsyncClient(timeout=120) as http:
            k = 0
            while time.monotonic() + 30 < end:
                await asyncio.sleep(30)
                k += 1
                r = await http.post(f"{url}/reload", json={"path": "ab"[k % 2]}, headers=AUTH)
                counts["reload"][str(r.status_code)] += 1

    async def killer() -> None:
        while time.monotonic() + 120 < end:
            await asyncio.sleep(120)
            pids = worker_pids(supervisor)
            if pids:
                victim = random.choice(sorted(pids))
                os.kill(victim, signal.SIGKILL)
                events.append(f"{time.monotonic() - t0:.0f}s: SIGKILL {victim}")

    async def sampler() -> None:
        while time.monotonic() < end:
            for pid in worker_pids(supervisor):
                with contextlib.suppress(FileNotFoundError, KeyError):
                    rss[pid].append((time.monotonic() - t0, rss_mb(pid)[0]))
            await asyncio.sleep(5)

    tasks = [good_client(i) for i in range(args.clients)] + [bad_client(), limit_client()]
    tasks += [slow_upload() for _ in range(args.slow)]
    tasks += [reloader(), killer(), sampler()]
    await asyncio.gather(*tasks)

    def window_max(lo: float, hi: float) -> float:
        return max((mb for series in rss.values() for t, mb in series if lo <= t < hi), default=0)

    total = args.minutes * 60
    first, last = window_max(30, 90), window_max(total - 60, total + 1)
    latencies.sort()
    unexpected = sum(
        n
        for kind, c in counts.items()
        for status, n in c.items()
        if status.isdigit() and int(status) >= 500 and status not in ("503", "504")
    )
    return {
        "minutes": args.minutes,
        "requests": {kind: dict(c) for kind, c in counts.items()},
        "good_p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "good_p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1)
        if latencies
        else None,
        "good_per_s": round(len(latencies) / total, 1),
        "max_rss_mb_per_worker": {pid: round(max(mb for _, mb in s), 1) for pid, s in rss.items()},
        "rss_first_minute_mb": round(first, 1),
        "rss_last_minute_mb": round(last, 1),
        "rss_growth_pct": round(100 * (last - first) / first, 1) if first else None,
        "unexpected_5xx": unexpected,
        "kills": events,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=10.0, help="soak length (0: checks only)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--clients", type=int, default=32, help="clients sending good requests")
    p.add_argument(
        "--think-ms",
        type=float,
        default=100.0,
        help="pause of each good client between requests (bounds the load)",
    )
    p.add_argument("--slow", type=int, default=200, help="slow uploads kept open")
    p.add_argument("--skip-checks", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak.json")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="ecab-soak-") as tmp:
        runs = Path(tmp) / "runs"
        make_model(runs / "a", 0)
        make_model(runs / "b", 1)
        summary: dict = {"workers": args.workers, "cpus": os.cpu_count()}
        with server_process(
            runs / "a",
            env={"ECAB_SERVE_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)},
            args=["--host", HOST, "--workers", str(args.workers)],
            timeout=120,
            output=subprocess.DEVNULL,
            stop_timeout=60,
        ) as (url, proc):
            wait_for_workers(url, args.workers, AUTH, timeout=120)
            port = int(url.rsplit(":", 1)[1])
            if not args.skip_checks:
                summary["bomb"] = check_bomb(url, proc.pid)
                print(json.dumps(summary["bomb"]), flush=True)
                summary["at_limit"] = check_at_limit(url, proc.pid)
                print(json.dumps(summary["at_limit"]), flush=True)
                summary["stalled"] = check_stalled_uploads(url, port)
                print(json.dumps(summary["stalled"]), flush=True)
                summary["double_kill"] = check_double_kill(url, proc.pid, args.workers)
                print(json.dumps(summary["double_kill"]), flush=True)
                summary["metrics"] = check_metrics(url)
            if args.minutes > 0:
                wait_for_workers(url, args.workers, AUTH, timeout=120)
                summary["soak"] = asyncio.run(soak(url, port, proc.pid, runs, args))
    print(json.dumps(summary, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if meets_targets(summary) else 1


def meets_targets(summary: dict) -> bool:
    ok = True
    if "bomb" in summary:
        b = summary["bomb"]
        ok &= 400 <= b["status"] < 500 and b["seconds"] < 1 and b["peak_rss_growth_mb"] < 100
        s = summary["stalled"]
        ok &= s["all_closed_after_s"] is not None and s["all_closed_after_s"] < 30
        ok &= s["good_answered_meanwhile"] > 0 and s["good_failed_meanwhile"] == 0
        ok &= summary["double_kill"]["full_strength_after_s"] < 15
        ok &= summary["metrics"]["has_requests_total"]
    if "soak" in summary:
        s = summary["soak"]
        ok &= s["unexpected_5xx"] == 0 and (s["rss_growth_pct"] or 0) < 10
    return bool(ok)


if __name__ == "__main__":
    sys.exit(main())
