"""`--workers N`: N uvicorn processes serving one model, and the file that keeps them in step.

One Python process is bound by its GIL (event loop and batching share it), so on CPU several
processes answer more requests than one; each holds its own model copy and micro-batcher. A
`POST /reload` reaches one worker only: that worker announces the new source in a small file,
and every other worker, polling it, loads the same source.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from serve.settings import ServeSettings

POLL_S = 0.5
START_GRACE_S = 5.0  # a worker that dies sooner is broken, not unlucky: stop, don't loop
log = logging.getLogger("serve")


class ReloadBoard:
    """The shared file: one JSON line naming the source most recently reloaded, and by whom."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seen = self._read()  # what was there before we started is not news

    def _read(self) -> str | None:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None

    @property
    def source(self) -> str | None:
        """The latest announced source: what a (re)started worker must load, not its --model."""
        return None if self._seen is None else json.loads(self._seen)["source"]

    def announce(self, source: str) -> None:
        text = json.dumps({"source": source, "pid": os.getpid(), "at": time.time_ns()})
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, self.path)  # atomic: readers see the old line or the new one
        self._seen = text

    async def follow(self, load: Callable[[str], Awaitable[object]]) -> None:
        """Forever: call `load(source)` for each reload another worker announces."""
        while True:
            await asyncio.sleep(POLL_S)
            text = self._read()
            if text is None or text == self._seen:
                continue
            self._seen = text
            source = json.loads(text)["source"]
            try:
                await load(source)
                log.info("worker %d: followed a reload to %s", os.getpid(), source)
            except Exception as exc:  # keep serving the old model; the next announcement may work
                log.warning("worker %d: cannot follow the reload to %s: %s",
                            os.getpid(), source, exc)


def run_workers(settings: ServeSettings, log_level: str) -> int:
    """Start `settings.workers` server processes on one port; restart any that dies.

    Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads connections
    evenly. (uvicorn's own --workers share one socket, and whichever worker wakes first may
    accept a whole burst of connections: one of three 32-client runs got 563 req/s, a single
    worker's throughput, where the other two got 905-999.)
    """
    with tempfile.TemporaryDirectory(prefix="ecab-serve-") as tmp, _reserve(settings) as port:
        settings = settings.model_copy(
            update={"port": port, "reload_file": str(Path(tmp) / "reload.json")}
        )
        ctx = multiprocessing.get_context("spawn")  # never fork a process that holds torch

        def spawn(i: int) -> multiprocessing.process.BaseProcess:
            proc = ctx.Process(target=_worker, args=(settings, log_level), name=f"serve-{i}")
            proc.start()
            return proc

        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)
        procs = [spawn(i) for i in range(settings.workers)]
        started = [time.monotonic()] * len(procs)
        log.warning("serving on http://%s:%d with %d workers", settings.host, port, len(procs))
        code = 0
        while not stopping:
            time.sleep(POLL_S)
            for i, proc in enumerate(procs):
                if proc.is_alive():
                    continue
                if time.monotonic() - started[i] < START_GRACE_S:
                    log.error("worker %d exited with %s while starting", i, proc.exitcode)
                    stopping, code = True, 1
                    break
                log.warning("worker %d exited with %s: restarting it", i, proc.exitcode)
                procs[i], started[i] = spawn(i), time.monotonic()
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for proc in procs:
            proc.join(timeout=20)
            if proc.is_alive():
                proc.kill()
        return code


@contextlib.contextmanager
def _reserve(settings: ServeSettings) -> Iterator[int]:
    """Bind (not listen) the port first: a clear error if it is taken, and port 0 resolved."""
    with _socket(settings.host, settings.port) as sock:
        yield sock.getsockname()[1]


def _socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot bind {host}:{port}: {exc.strerror}") from exc
    return sock


def _worker(settings: ServeSettings, log_level: str) -> None:
    import uvicorn

    from serve.app import create_app

    sock = _socket(settings.host, settings.port)
    config = uvicorn.Config(create_app(settings), log_level=log_level)
    uvicorn.Server(config).run(sockets=[sock])
