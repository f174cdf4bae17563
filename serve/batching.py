"""The micro-batcher: requests' images → shared forward passes on one inference thread.

Requests hand their images to one `MicroBatcher`; its single worker runs a forward pass over
whatever has queued (up to `max_batch` images) in a dedicated thread, so the event loop never
waits on torch. A reload only swaps which handle new requests capture: jobs carry the handle
they were converted for, so a batch never mixes input shapes and no request fails mid-swap.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from serve.model import ModelHandle, Prediction

T = TypeVar("T")


@dataclass(eq=False)
class _Job:
    handle: ModelHandle
    images: Tensor
    top_k: int
    attention: bool
    cam: bool
    future: asyncio.Future[list[Prediction]]


class MicroBatcher:
    """Queue of jobs → forward passes of up to `max_batch` images on one worker thread.

    The worker runs as soon as it is free. It waits (at most `max_wait_s`) only while other
    requests are still being decoded, so a lone request pays no batching delay and a burst
    shares one forward pass. A job larger than `max_batch` runs alone.
    """

    def __init__(
        self,
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int], None] = lambda images: None,
        on_queue: Callable[[int], None] = lambda images: None,
    ) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch  # images per forward pass, for the metrics
        self._on_queue = on_queue  # images waiting, for the metrics
        self._queue: collections.deque[_Job] = collections.deque()
        self._queued_images = 0
        self._arriving = 0
        self._wake = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serve-inference")
        self._worker = asyncio.create_task(self._run(), name="serve-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @contextlib.contextmanager
    def arrival(self) -> Iterator[Arrival]:
        """Announce a request that is decoding its images, so a forming batch waits for it."""
        ticket = Arrival(self)
        self._arriving += 1
        try:
            yield ticket
        finally:
            if not ticket.submitted:
                self._arriving -= 1
                self._wake.set()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the inference thread. Model loading goes here too: torch's intra-op
        thread pool belongs to the thread that first uses it, and a second thread's pool (say
        a loader's) keeps spinning on the same cores, which made batch-1 forwards 2.6× slower."""
        assert self._executor is not None, "start() the batcher first"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _enqueue(self, job: _Job) -> None:
        self._queue.append(job)
        self._queued_images += len(job.images)
        self._on_queue(self._queued_images)
        self._arriving -= 1
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # A job whose request gave up (its deadline passed) is done already: skip it.
            jobs = [job for job in await self._collect() if not job.future.done()]
            # Jobs converted for different handles (a reload happened) never share a batch.
            groups: dict[int, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(id(job.handle), []).append(job)
            for group in groups.values():
                try:
                    results = await loop.run_in_executor(self._executor, _run_group, group)
                except Exception as exc:  # the requests report it; the worker keeps serving
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                self._on_batch(sum(len(job.images) for job in group))
                for job, result in zip(group, results, strict=True):
                    if not job.future.done():
                        job.future.set_result(result)

    async def _collect(self) -> list[_Job]:
        loop = asyncio.get_running_loop()
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        deadline = loop.time() + self.max_wait_s
        while self._queued_images < self.max_batch and self._arriving > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except asyncio.TimeoutError:
                break
        batch: list[_Job] = []
        size = 0
        while self._queue and (not batch or size + len(self._queue[0].images) <= self.max_batch):
            job = self._queue.popleft()
            batch.append(job)
            size += len(job.images)
        self._queued_images -= size
        self._on_queue(self._queued_images)
        return batch


class Arrival:
    """A request on its way into the queue (see `MicroBatcher.arrival`)."""

    def __init__(self, batcher: MicroBatcher) -> None:
        self._batcher = batcher
        self.submitted = False

    def submit(
        self, handle: ModelHandle, images: Tensor, top_k: int, attention: bool, cam: bool = False
    ) -> asyncio.Future[list[Prediction]]:
        future: asyncio.Future[list[Prediction]] = asyncio.get_running_loop().create_future()
        self.submitted = True
        self._batcher._enqueue(_Job(handle, images, top_k, attention, cam, future))
        return future


def _run_group(jobs: list[_Job]) -> list[list[Prediction]]:
    """One forward pass for jobs of one handle; each gets its own slice back."""
    handle = jobs[0].handle
    images = torch.cat([job.images for job in jobs]) if len(jobs) > 1 else jobs[0].images
    predictions = handle.predict(
        images,
        max(job.top_k for job in jobs),
        any(job.attention for job in jobs),
        any(job.cam for job in jobs),
    )
    out, start = [], 0
    for job in jobs:
        mine = predictions[start : start + len(job.images)]
        start += len(job.images)
        out.append(
            [
                Prediction(
                    top=p.top[: job.top_k],
                    attention=p.attention if job.attention else None,
                    cam=p.cam if job.cam else None,
                )
                for p in mine
            ]
        )
    return out
