"""The file through which `--workers` agree on the model: numbered reloads under one lock.

A `POST /reload` reaches one worker. That worker takes the board's lock (an `flock`, so reloads
on different workers run one after another), loads the checkpoint, and writes the next
generation number with its source. Every other worker sees a generation newer than its own and
loads that source, so all end on the latest reload whatever order reloads arrived in.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Announcement:
    generation: int  # 1 for the first reload; a worker on its start-up model is at 0
    source: str


class ReloadBoard:
    """One JSON line (generation, source, who, when), replaced atomically; a lock file beside."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def latest(self) -> Announcement | None:
        """The newest reload, or None before any; what a (re)started worker must serve."""
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        return Announcement(int(raw["generation"]), str(raw["source"]))

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the lock every worker's reload takes; waiting for it never blocks the loop."""
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def announce(self, source: str) -> int:
        """Record a reload (call holding `exclusive`); returns its generation."""
        previous = self.latest()
        generation = (previous.generation if previous else 0) + 1
        text = json.dumps(
            {"generation": generation, "source": source, "pid": os.getpid(), "at": time.time()}
        )
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, self.path)  # atomic: readers see the old line or the new one
        return generation
