"""`--workers N`: N uvicorn processes serving one model, and the file that keeps them in step.

One Python process is bound by its GIL (event loop and batching share it), so on CPU several
processes answer more requests than one; each holds its own model copy and micro-batcher. A
`POST /reload` reaches one worker only: that worker announces the new source in a small file,
and every other worker, polling it, loads the same source.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from serve.settings import ServeSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

POLL_S = 0.5
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


def app_from_env() -> FastAPI:
    """uvicorn's app factory in each worker: the settings come from the environment."""
    from serve.app import create_app

    return create_app(ServeSettings())


def run_workers(settings: ServeSettings, log_level: str) -> None:
    import uvicorn

    with tempfile.TemporaryDirectory(prefix="ecab-serve-") as tmp:
        board = Path(tmp) / "reload.json"
        # uvicorn starts workers from an import string: they rebuild the settings from env.
        os.environ.update(settings.model_copy(update={"reload_file": str(board)}).to_env())
        uvicorn.run(
            "serve.workers:app_from_env",
            factory=True,
            workers=settings.workers,
            host=settings.host,
            port=settings.port,
            log_level=log_level,
        )
