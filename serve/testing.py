"""A real `python -m serve` for the tests and the benchmarks: start it, wait for it, stop it.

One home for what they all do around a live server: a free loopback port, the process (always
stopped), readiness of one or of every `--workers` process, and those processes' pids.
Needs httpx (a dev dependency); nothing in the service imports this module.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]  # the checkout: `python -m serve` runs from it
HOST = "127.0.0.1"  # loopback only


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server_process(
    model: str | Path,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] | list[str] = (),
    timeout: float = 60.0,
    output: int | None = subprocess.PIPE,
    stop_timeout: float = 15.0,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m serve` on a free loopback port, once its first worker is ready: its base URL
    and the process; stopped on exit (SIGTERM, then SIGKILL after `stop_timeout`).

    `env` adds to this process's environment. `output` takes the server's stdout and stderr:
    PIPE (shown if it fails to start; for short runs: nothing drains it), None (the terminal)
    or DEVNULL.
    """
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
        stdout=output,
        stderr=subprocess.STDOUT if output == subprocess.PIPE else output,
    )
    url = f"http://{HOST}:{port}"
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
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        if proc.stdout:
            proc.stdout.close()


@contextlib.contextmanager
def server(
    model: str | Path,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] | list[str] = (),
    timeout: float = 60.0,
) -> Iterator[str]:
    """As `server_process`, the URL only."""
    with server_process(model, env, args, timeout) as (url, _):
        yield url


def wait_for_workers(
    url: str,
    n: int,
    headers: Mapping[str, str] | None = None,
    not_pids: Collection[int] = (),
    timeout: float = 60.0,
) -> list[dict]:
    """Every worker's status from /readyz once n are ready, none with a pid in `not_pids`
    (pids are listed only with the token in `headers`). A single process lists no workers:
    it counts as one, ready when /readyz says so."""
    deadline = time.monotonic() + timeout
    workers: list[dict] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError, ValueError):
            r = httpx.get(f"{url}/readyz", headers=headers, timeout=5)
            workers = r.json().get("workers") or [{"ready": r.status_code == 200, "pid": None}]
            live = [w for w in workers if w["ready"] and w["pid"] not in not_pids]
            if len(live) >= n:
                return workers
        time.sleep(0.1)
    raise TimeoutError(f"not {n} fresh ready workers after {timeout:.0f} s: {workers}")


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
