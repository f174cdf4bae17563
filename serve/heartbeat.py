"""Each `--workers` process says, once a second, that it is alive and what it serves.

The supervisor replaces a worker whose beat stops (a hung event loop), and counts a worker as
started at its first beat; `/readyz` and `/model` read every worker's beat to show each one's
model generation. A worker whose supervisor has gone stops itself rather than serve orphaned.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

INTERVAL_S = 1.0


@dataclass(frozen=True)
class Beat:
    index: int  # the worker's slot (0..N-1); its pid changes on every restart
    pid: int
    generation: int
    ready: bool
    at: float  # time.time() of the beat


def beat_path(state_dir: str | Path, index: int) -> Path:
    return Path(state_dir) / f"worker-{index}.json"


def write_beat(state_dir: str | Path, beat: Beat) -> None:
    path = beat_path(state_dir, beat.index)
    tmp = path.with_name(f".{path.name}.{beat.pid}")
    tmp.write_text(json.dumps(asdict(beat)))
    os.replace(tmp, path)


def read_beat(state_dir: str | Path, index: int) -> Beat | None:
    try:
        return Beat(**json.loads(beat_path(state_dir, index).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def read_beats(state_dir: str | Path, workers: int) -> list[Beat]:
    return [b for i in range(workers) if (b := read_beat(state_dir, i)) is not None]


async def keep_beating(
    state_dir: str, index: int, status: Callable[[], tuple[int, bool]], parent: int
) -> None:
    """Forever: write this worker's beat (`status()` gives generation and readiness)."""
    while True:
        if os.getppid() != parent:  # the supervisor died: drain and exit, as on SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)
            return
        generation, ready = status()
        write_beat(state_dir, Beat(index, os.getpid(), generation, ready, time.time()))
        await asyncio.sleep(INTERVAL_S)
