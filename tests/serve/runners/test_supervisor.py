"""`--workers N`: shared load, followed reloads, every worker kept up, a taken port refused."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serve_support import FASHION, ROOT, make_checkpoint, sample_png

from serve.testing import server_process, wait_for_workers, worker_pids

pytestmark = pytest.mark.slow

TOKEN = "e2e-token"


def run_serve(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m serve ARGS` run to its end, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "serve", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_workers_share_the_load_and_follow_a_reload(experiment: Path) -> None:
    # Under the model root (runs/, the folder holding the experiment), as /reload requires.
    other = make_checkpoint(experiment.parent / "other", "se", FASHION, seed=7)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    files = [("files", ("a.png", sample_png(0), "image/png"))]

    def answers(url: str, path: str, n: int = 16) -> set[int]:
        """pids of the workers that answered n concurrent connections, all serving `path`."""

        def one(_: int) -> int:
            with httpx.Client(base_url=url, timeout=30) as http:  # a new connection each
                assert http.post("/predict", files=files, headers=auth).status_code == 200
                info = http.get("/model", headers=auth).json()
                assert info["path"] == path
                return info["pid"]

        with ThreadPoolExecutor(8) as pool:
            return set(pool.map(one, range(n)))

    with server_process(experiment, env={"ECAB_SERVE_TOKEN": TOKEN}, args=("--workers", "2")) as (
        url,
        proc,
    ):
        wait_for_workers(url, 2, auth)
        pids = set()
        for _ in range(10):
            pids |= answers(url, str((experiment / "best").resolve()))
            if len(pids) == 2:
                break
        assert len(pids) == 2, pids
        r = httpx.post(f"{url}/reload", json={"path": "other"}, headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["generation"] == 1
        deadline, seen = time.monotonic() + 30, set()
        while len(seen) < 2 and time.monotonic() < deadline:
            try:
                seen |= answers(url, str(other.resolve()))
            except AssertionError:  # a worker has not followed yet
                seen.clear()
                time.sleep(0.2)
        assert seen == pids
        # A worker that dies, even young, is restarted and serves the reload, not its --model.
        os.kill(min(pids), signal.SIGKILL)
        workers = wait_for_workers(url, 2, auth, not_pids={min(pids)})
        assert all(w["generation"] == 1 for w in workers), workers
        assert answers(url, str(other.resolve())) <= {w["pid"] for w in workers}
        assert proc.poll() is None
        # /metrics sums every worker's counts, whichever worker answers it.
        text = httpx.get(f"{url}/metrics", timeout=10).text
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("ecab_serve_requests_total{")
            and 'route="/predict"' in line
            and 'status="200"' in line
        )
        assert counted >= 16 * 2, counted


def test_supervisor_keeps_every_worker_up(experiment: Path) -> None:
    """A worker killed twice (the second time while restarting) or hung comes back; the
    service answers throughout; a second server on the port is refused."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    files = [("files", ("a.png", sample_png(0), "image/png"))]
    with server_process(experiment, env={"ECAB_SERVE_TOKEN": TOKEN}, args=("--workers", "2")) as (
        url,
        proc,
    ):
        wait_for_workers(url, 2, auth)
        port = url.rsplit(":", 1)[1]
        second = run_serve("--model", str(experiment), "--workers", "2", "--port", port)
        assert second.returncode == 2, second.stderr
        assert "already served" in second.stderr

        answered: list[tuple[float, int]] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                with contextlib.suppress(httpx.TransportError), httpx.Client(timeout=10) as c:
                    r = c.post(f"{url}/predict", files=files, headers=auth)
                    answered.append((time.monotonic(), r.status_code))
                time.sleep(0.02)

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            first = worker_pids(proc.pid)
            assert len(first) == 2
            start = time.monotonic()
            os.kill(min(first), signal.SIGKILL)
            deadline = time.monotonic() + 30
            while not (worker_pids(proc.pid) - first) and time.monotonic() < deadline:
                time.sleep(0.05)
            (restarted,) = worker_pids(proc.pid) - first
            time.sleep(1.0)
            os.kill(restarted, signal.SIGKILL)  # while it is still starting
            wait_for_workers(url, 2, auth, not_pids={min(first), restarted})
            recovered = time.monotonic() - start

            stop.set()
            thread.join()
            # A hung worker (stopped: no heartbeat) is killed and replaced.
            now = {w["pid"] for w in wait_for_workers(url, 2, auth)}
            os.kill(min(now), signal.SIGSTOP)
            wait_for_workers(url, 2, auth, not_pids={min(now)}, timeout=60)
            assert min(now) not in worker_pids(proc.pid)
        finally:
            stop.set()
            thread.join()
        assert proc.poll() is None, "the server must not stop"
    assert recovered < 60, recovered
    # It answered throughout the kills: no second without a successful answer.
    ok = [t for t, status in answered if status == 200]
    gaps = [b - a for a, b in itertools.pairwise(ok)]
    assert ok and max(gaps) < 3.0, max(gaps)
    assert {status for _, status in answered} == {200}


def test_repeated_start_up_failures_stop_the_server(experiment: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(experiment / "best", broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")  # meta.json still reads
    run = run_serve("--model", str(broken), "--workers", "2", "--port", "0", timeout=300)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "failed to start 5 times in a row" in run.stderr
    assert "not a valid safetensors file" in run.stderr  # the worker's own reason


@pytest.mark.parametrize(
    ("host", "family", "shown"),
    [("127.0.0.1", socket.AF_INET, "127.0.0.1"), ("::1", socket.AF_INET6, "[::1]")],
)
def test_workers_refuse_a_taken_port(
    experiment: Path, host: str, family: socket.AddressFamily, shown: str
) -> None:
    with socket.socket(family) as taken:
        try:
            taken.bind((host, 0))
        except OSError:  # a container without IPv6
            pytest.skip(f"cannot bind {host} here")
        taken.listen()
        port = taken.getsockname()[1]
        args = ("--model", str(experiment), "--workers", "2", "--host", host, "--port", str(port))
        run = run_serve(*args)
    assert run.returncode == 2
    assert f"{shown}:{port} is already served" in run.stderr  # an IPv6 host is bracketed
