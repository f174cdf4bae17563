"""`--workers N`: N uvicorn processes on one port, and the supervisor that keeps N of them up.

One Python process is bound by its GIL (event loop and batching share it), so on CPU several
processes answer more requests than one; each holds its own model copy and micro-batcher and
listens on its own SO_REUSEPORT socket. The supervisor's rule:

- a worker that dies is restarted, whatever its age: at once if it had started (sent its first
  heartbeat), else after a backoff that doubles with each start-up failure in a row;
- the server exits only when a worker fails to start `MAX_START_FAILURES` times in a row;
- a worker whose heartbeat stops (a hung event loop) is killed and so restarted;
- a second server on a port this one serves is refused at start.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ecab_tune.cluster import netloc
from serve.heartbeat import read_beat
from serve.settings import ServeSettings

POLL_S = 0.25
MAX_START_FAILURES = 5
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # before the 1st, 2nd, ... retry after failed starts
START_TIMEOUT_S = 180.0  # no first heartbeat by then: a failed start
HEARTBEAT_TIMEOUT_S = 10.0  # ten missed beats: hung
log = logging.getLogger("serve")


class PortTaken(OSError):
    """The port is served already (by another server of ours, or anything that answers)."""


@dataclass
class _Slot:
    index: int
    proc: multiprocessing.process.BaseProcess | None = None
    spawned_at: float = 0.0
    up: bool = False  # sent a heartbeat since its (re)start
    failures: int = 0  # start-up failures in a row
    restart_at: float = 0.0


def run_workers(settings: ServeSettings, log_level: str) -> int:
    """Serve with `settings.workers` supervised processes until SIGINT/SIGTERM; exit status."""
    with (
        tempfile.TemporaryDirectory(prefix="ecab-serve-") as state,
        _reserve(settings) as port,
    ):
        settings = settings.model_copy(update={"port": port, "state_dir": state})
        # Workers share Prometheus metrics through files here (read at their first import).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(Path(state) / "metrics")
        (Path(state) / "metrics").mkdir()
        return _Supervisor(settings, log_level).run()


class _Supervisor:
    def __init__(self, settings: ServeSettings, log_level: str) -> None:
        self.settings = settings
        self.log_level = log_level
        # Workers fork from a server process that has imported the app (torch included) and
        # done nothing else: no threads, no model, no CUDA. A restart then costs the model load,
        # not the 2-7 s of imports a fresh interpreter pays. The supervisor itself never forks.
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["serve.app", "serve.runners.process"])
        self.slots = [_Slot(i) for i in range(settings.workers)]
        self.stopping = False

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)
        s = self.settings
        log.warning("serving on http://%s with %d workers", netloc(s.host, s.port), s.workers)
        code = 0
        try:
            while not self.stopping:
                now = time.monotonic()
                for slot in self.slots:
                    if not self._tend(slot, now):
                        code, self.stopping = 1, True
                        break
                time.sleep(POLL_S)
        finally:
            self._shutdown()
        return code

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _spawn(self, slot: _Slot) -> None:
        settings = self.settings.model_copy(update={"worker_index": slot.index})
        proc = self.ctx.Process(
            target=_worker, args=(settings, self.log_level), name=f"serve-{slot.index}"
        )
        proc.start()
        slot.proc, slot.spawned_at, slot.up = proc, time.monotonic(), False

    def _tend(self, slot: _Slot, now: float) -> bool:
        """Start, watch or restart one worker; False when it keeps failing to start."""
        if slot.proc is None:
            if now >= slot.restart_at:
                self._spawn(slot)
            return True
        if not slot.proc.is_alive():
            return self._exited(slot, now)
        beat = read_beat(self.settings.state_dir or "", slot.index)
        if beat is not None and beat.pid == slot.proc.pid:
            if not slot.up:
                slot.up, slot.failures = True, 0
            silent = time.time() - beat.at
            if silent > HEARTBEAT_TIMEOUT_S:
                log.error(
                    "worker %d (pid %d) sent no heartbeat for %.0f s: replacing it",
                    slot.index,
                    slot.proc.pid,
                    silent,
                )
                slot.proc.kill()
        elif not slot.up and now - slot.spawned_at > START_TIMEOUT_S:
            log.error(
                "worker %d (pid %d) not started after %.0f s: replacing it",
                slot.index,
                slot.proc.pid,
                START_TIMEOUT_S,
            )
            slot.proc.kill()
        return True

    def _exited(self, slot: _Slot, now: float) -> bool:
        assert slot.proc is not None
        pid, code = slot.proc.pid, slot.proc.exitcode
        slot.proc.join()
        slot.proc = None
        _forget_metrics(pid)
        if slot.up:
            log.warning("worker %d (pid %s) exited with %s: restarting it", slot.index, pid, code)
            slot.restart_at = now
            return True
        slot.failures += 1
        if slot.failures >= MAX_START_FAILURES:
            log.error(
                "worker %d failed to start %d times in a row (last exit status %s): "
                "stopping the server; its log above says why",
                slot.index,
                slot.failures,
                code,
            )
            return False
        delay = BACKOFF_S[min(slot.failures, len(BACKOFF_S)) - 1]
        log.warning(
            "worker %d (pid %s) exited with %s while starting (%d in a row): "
            "restarting it in %.1f s",
            slot.index,
            pid,
            code,
            slot.failures,
            delay,
        )
        slot.restart_at = now + delay
        return True

    def _shutdown(self) -> None:
        procs = [slot.proc for slot in self.slots if slot.proc is not None]
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: uvicorn drains the requests in flight
        deadline = time.monotonic() + self.settings.drain_s + 5.0
        for proc in procs:
            proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()


def _forget_metrics(pid: int | None) -> None:
    if pid is None:
        return
    from prometheus_client import multiprocess

    # The dead worker's live gauges (in flight, queue depth) must not count any more.
    multiprocess.mark_process_dead(pid)


@contextlib.contextmanager
def _reserve(settings: ServeSettings) -> Iterator[int]:
    """Bind (not listen) the port first, and lock it: a clear error if it is taken or served.

    SO_REUSEPORT, which lets the workers share the port, would equally let a second server
    join it and silently take half the traffic; the lock file and a probe refuse that.
    """
    if _answers(settings.host, settings.port):
        raise PortTaken(
            f"{netloc(settings.host, settings.port)} is already served: stop that server "
            "or choose another --port"
        )
    with _socket(settings.host, settings.port) as sock:
        port = sock.getsockname()[1]
        lock = Path(tempfile.gettempdir()) / f"ecab-serve-port-{port}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PortTaken(
                    f"{netloc(settings.host, port)} is already served by another `python -m serve` "
                    f"(lock {lock}): stop it or choose another --port"
                ) from None
            yield port
        finally:
            os.close(fd)


def _answers(host: str, port: int) -> bool:
    if port == 0:
        return False
    probe = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    with contextlib.suppress(OSError), socket.create_connection((probe, port), timeout=1.0):
        return True
    return False


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
    # Imported here, in the worker: the fork server preloaded them; the supervisor never needs
    # the app (nor Prometheus before PROMETHEUS_MULTIPROC_DIR is set).
    from serve.app import create_app
    from serve.runners.process import serve_forever

    sock = _socket(settings.host, settings.port)
    serve_forever(create_app(settings), settings, log_level, sockets=[sock])
