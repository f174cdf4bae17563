"""What the routes call: predict, describe and reload, on top of the handle and the batcher."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch

from ecab_tune.checkpoint import CheckpointError
from ecab_tune.models import resolved_options
from serve.batching import MicroBatcher
from serve.decoding import Decoder
from serve.errors import (
    BadCheckpoint,
    DeadlineExceeded,
    InvalidInput,
    NotReady,
    Overloaded,
    RequestTimeout,
)
from serve.heartbeat import INTERVAL_S, read_beats
from serve.images import Upload
from serve.metrics import Metrics
from serve.model import ModelHandle, Prediction, load_handle
from serve.model_root import default_root, display_name, within
from serve.reload_board import Announcement
from serve.schemas import (
    AttentionModule,
    AttentionWeights,
    ClassScore,
    ImagePrediction,
    ModelInfo,
    PredictResponse,
    Readiness,
    WorkerStatus,
)
from serve.settings import ServeSettings
from serve.worker_sync import WorkerSync

T = TypeVar("T")
STALE_S = 3 * INTERVAL_S
log = logging.getLogger("serve")


class Service:
    """The one shared resource of the app (injected into routes, never imported as a global)."""

    def __init__(self, settings: ServeSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.handle: ModelHandle | None = None
        self.generation = 0  # reloads served: 0 is the start-up model
        self.batcher: MicroBatcher | None = None
        self.decoder: Decoder | None = None
        self.root = (
            Path(settings.model_root).resolve()
            if settings.model_root
            else (default_root(settings.model))
        )
        self.in_flight = 0
        self._reload_lock: asyncio.Lock | None = None
        self.sync = (
            WorkerSync(settings.state_dir, settings.worker_index)
            if settings.state_dir is not None and settings.worker_index is not None
            else None
        )

    async def start(self) -> None:
        s = self.settings
        torch.set_num_threads(s.inference_threads())
        self._reload_lock = asyncio.Lock()
        self.decoder = Decoder(
            s.max_pixels, s.max_request_pixels, s.max_decodes, observe=self.metrics.decode.observe
        )
        self.batcher = MicroBatcher(
            s.max_batch,
            s.max_wait_ms / 1000.0,
            on_batch=self.metrics.batch.observe,
            on_queue=self.metrics.queue.set,
        )
        await self.batcher.start()
        latest = self.sync.board.latest() if self.sync else None
        if latest is not None:
            # A restarted worker serves the latest reload, not its --model.
            try:
                self.handle = await self.batcher.call(load_handle, latest.source, s.device)
                self.generation = latest.generation
            except CheckpointError as exc:
                log.warning(
                    "worker %d: cannot load reload %d (%s): %s; not ready",
                    os.getpid(),
                    latest.generation,
                    latest.source,
                    exc,
                )
                assert self.sync is not None
                self.sync.failed = latest
        if self.handle is None and s.model is not None:
            self.handle = await self.batcher.call(load_handle, s.model, s.device)
        self.metrics.generation.set(self.generation)
        if self.sync is not None:
            self.sync.start(lambda: self.generation, self.is_ready, self._follow)

    async def stop(self) -> None:
        if self.sync is not None:
            await self.sync.stop()
        if self.batcher is not None:
            await self.batcher.stop()

    # Serving --------------------------------------------------------------------------------

    def current(self) -> ModelHandle:
        if self.handle is None or self.batcher is None:
            raise NotReady("no model is loaded: start with --model PATH or POST /reload a path")
        return self.handle

    def admit(self) -> None:
        """503 at once, before the body is read, when the worker is at its in-flight cap."""
        if self.in_flight >= self.settings.max_in_flight:
            raise Overloaded(
                f"over capacity: {self.in_flight} requests in progress on this worker "
                f"(the cap is {self.settings.max_in_flight}); retry shortly"
            )

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        self.admit()  # again: others may have taken the slots while this body arrived
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def within_deadline(self, work: Callable[[Callable[[], None]], Awaitable[T]]) -> T:
        """Run `work(body_received)` under the request deadline: 408 while the body is still
        arriving, 504 after; cancelling it drops its images from the batch queue."""
        received = False

        def body_received() -> None:
            nonlocal received
            received = True

        timeout = self.settings.request_timeout_s
        try:
            return await asyncio.wait_for(work(body_received), timeout)
        except asyncio.TimeoutError:
            if not received:
                raise RequestTimeout(
                    f"the body did not arrive within the request deadline of {timeout:g} s"
                ) from None
            raise DeadlineExceeded(
                f"no answer within the request deadline of {timeout:g} s: the server is busy"
            ) from None

    async def predict(
        self, uploads: list[Upload], top_k: int | None, attention: bool, cam: bool = False
    ) -> PredictResponse:
        # One handle for the whole request: a reload meanwhile cannot change its input shape.
        handle = self.current()
        assert self.batcher is not None and self.decoder is not None
        classes = handle.classes
        if top_k is None:
            top_k = min(self.settings.top_k, len(classes))
        elif top_k > len(classes):
            raise InvalidInput(
                f"top_k={top_k} is invalid: this model has {len(classes)} classes "
                f"(allowed: 1..{len(classes)})"
            )
        with self.batcher.arrival() as arrival:
            batch = await self.decoder.to_batch(uploads, handle.input_shape)
            future = arrival.submit(handle, batch, top_k, attention, cam)
        results = await future
        return PredictResponse(
            model=display_name(self.root, handle.path),
            predictions=[
                _to_schema(upload.name, result, classes)
                for upload, result in zip(uploads, results, strict=True)
            ],
        )

    # Describing -----------------------------------------------------------------------------

    def is_ready(self) -> bool:
        if self.handle is None or self.batcher is None:
            return False
        return self.sync is None or self.sync.behind(self.generation) is None

    def readiness(self, private: bool = False) -> Readiness:
        workers = self._workers(private)
        if self.handle is None or self.batcher is None:
            return Readiness(status="not ready", reason="no model is loaded", workers=workers)
        name = display_name(self.root, self.handle.path)
        behind = self.sync.behind(self.generation) if self.sync else None
        if behind is not None:
            return Readiness(
                status="not ready",
                model=name,
                generation=self.generation,
                workers=workers,
                reason=f"this worker has not followed reload {behind.generation}"
                + (" (it failed to load it)" if self.sync and self.sync.failed == behind else ""),
            )
        return Readiness(status="ready", model=name, generation=self.generation, workers=workers)

    def info(self, private: bool) -> ModelInfo:
        handle = self.current()
        meta = handle.meta
        info = ModelInfo(
            name=display_name(self.root, handle.path),
            generation=self.generation,
            workers=self._workers(private),
            architecture=meta.model.name,
            attention=meta.model.attention,
            attention_kwargs=resolved_options(meta.model.attention, meta.model.attention_kwargs),
            config=meta.model.to_dict(),
            attention_modules=[
                AttentionModule(
                    name=m.name,
                    kind=m.kind,
                    outputs=list(m.outputs),
                    channels=m.channels,
                    sources=list(m.sources) or None,
                )
                for m in handle.attention_modules
            ],
            parameters=handle.parameters,
            input_shape=list(handle.input_shape),
            classes=list(handle.classes),
            data=meta.data.to_dict(),
            metrics=meta.metrics,
            train=None if meta.train is None else dataclasses.asdict(meta.train),
            loaded_at=handle.loaded_at,
        )
        if private:
            info = info.model_copy(
                update={
                    "path": str(handle.path),
                    "source": handle.source,
                    "search": meta.extra,
                    "pid": os.getpid(),
                }
            )
        return info

    def _workers(self, private: bool) -> list[WorkerStatus] | None:
        if self.sync is None:
            return None
        now = time.time()
        return [
            WorkerStatus(
                index=b.index,
                generation=b.generation,
                # A stale beat is a worker that died or hangs: not ready, whatever it last said.
                ready=b.ready and now - b.at < STALE_S,
                pid=b.pid if private else None,
            )
            for b in read_beats(self.sync.state_dir, self.settings.workers)
        ]

    # Reloading ------------------------------------------------------------------------------

    async def reload(self, path: str | None) -> ModelInfo:
        """Load a checkpoint next to the serving one, then swap; on failure keep the old one.

        Reloads are numbered under a lock every worker takes, so concurrent reloads on
        different workers run one after another and all workers end on the last one.
        """
        assert self._reload_lock is not None and self.batcher is not None
        if path is not None:
            source = within(self.root, path)
        elif self.handle is not None:
            source = self.handle.source
        elif self.settings.model is not None:
            source = self.settings.model
        else:
            raise InvalidInput('no path given and none configured: send {"path": "..."}')
        async with self._reload_lock:
            board = self.sync.board.exclusive() if self.sync else contextlib.nullcontext()
            async with board:  # type: ignore[attr-defined]
                try:
                    await self._load(source)
                except CheckpointError as exc:
                    kept = "still serving the old model" if self.handle else "no model is loaded"
                    raise BadCheckpoint(f"cannot load {path or 'it'}: {exc}; {kept}") from exc
                self.generation = (
                    self.sync.board.announce(source) if self.sync else self.generation + 1
                )
                if self.sync is not None:
                    self.sync.failed = None
            self.metrics.generation.set(self.generation)
        return self.info(private=True)

    async def _follow(self, news: Announcement) -> None:
        assert self._reload_lock is not None
        async with self._reload_lock:
            if news.generation <= self.generation:
                return  # this worker made, or already followed, that reload
            await self._load(news.source)
            self.generation = news.generation
            self.metrics.generation.set(self.generation)

    async def _load(self, source: str) -> ModelHandle:
        """Load next to the serving model, then swap (call with the reload lock held)."""
        assert self.batcher is not None
        handle = await self.batcher.call(load_handle, source, self.settings.device)
        # A single attribute store: requests see either the old or the new handle.
        self.handle = handle
        return handle


def _to_schema(name: str, result: Prediction, classes: tuple[str, ...]) -> ImagePrediction:
    return ImagePrediction(
        name=name,
        top=[ClassScore(label=classes[i], index=i, probability=p) for i, p in result.top],
        attention=None
        if result.attention is None
        else {n: AttentionWeights(**maps) for n, maps in result.attention.items()},
        cam=result.cam,
        cam_shape=None if result.cam is None else [len(result.cam), len(result.cam[0])],
    )
