"""A `--workers` process's link to the others: follow their reloads, and beat its heart.

`follow` polls the reload board; on a generation newer than the worker's own it loads that
source. A worker that cannot load it keeps serving its old model but is not ready until a later
reload succeeds, so `/readyz` shows that the workers disagree instead of a log line only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable

from serve.heartbeat import keep_beating
from serve.reload_board import Announcement, ReloadBoard

POLL_S = 0.5
log = logging.getLogger("serve")


class WorkerSync:
    def __init__(self, state_dir: str, index: int) -> None:
        self.board = ReloadBoard(os.path.join(state_dir, "reload.json"))
        self.state_dir = state_dir
        self.index = index
        self.failed: Announcement | None = None  # the reload this worker could not follow
        self._tasks: list[asyncio.Task[None]] = []

    def start(
        self,
        generation: Callable[[], int],
        ready: Callable[[], bool],
        follow: Callable[[Announcement], Awaitable[None]],
    ) -> None:
        status = lambda: (generation(), ready())  # noqa: E731
        self._tasks = [
            asyncio.create_task(self._follow(generation, follow), name="serve-follow"),
            asyncio.create_task(
                keep_beating(self.state_dir, self.index, status, os.getppid()), name="serve-beat"
            ),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def behind(self, generation: int) -> Announcement | None:
        """The board's newest reload when this worker (at `generation`) has not followed it."""
        latest = self.board.latest()
        return latest if latest is not None and latest.generation > generation else None

    async def _follow(
        self, generation: Callable[[], int], follow: Callable[[Announcement], Awaitable[None]]
    ) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            news = self.behind(generation())
            if news is None or news == self.failed:
                continue
            try:
                await follow(news)
                self.failed = None
                log.info(
                    "worker %d: followed reload %d to %s", os.getpid(), news.generation, news.source
                )
            except Exception as exc:  # keep serving the old model; not ready meanwhile
                self.failed = news
                log.warning(
                    "worker %d: cannot follow reload %d to %s: %s",
                    os.getpid(),
                    news.generation,
                    news.source,
                    exc,
                )
