"""What the routes call: predict, describe and reload, on top of the handle and the batcher."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os

import torch
from PIL import Image
from starlette.concurrency import run_in_threadpool
from torch import Tensor

from ecab_tune.checkpoint import CheckpointError
from ecab_tune.data import image_to_uint8
from serve import images as image_io
from serve.errors import BadCheckpoint, InvalidInput, NotReady
from serve.images import Upload
from serve.inference import MicroBatcher, ModelHandle, Prediction, load_handle
from serve.schemas import (
    AttentionModule,
    AttentionWeights,
    ClassScore,
    ImagePrediction,
    ModelInfo,
    PredictResponse,
    Readiness,
)
from serve.settings import ServeSettings
from serve.workers import ReloadBoard

# A 128×128 image decodes in well under 0.1 ms: less than a round trip to a worker thread.
INLINE_DECODE_PIXELS = 128 * 128


class Service:
    """The one shared resource of the app (injected into routes, never imported as a global)."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.handle: ModelHandle | None = None
        self.batcher: MicroBatcher | None = None
        self._reload_lock: asyncio.Lock | None = None
        self._board = ReloadBoard(settings.reload_file) if settings.reload_file else None
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        torch.set_num_threads(s.inference_threads())
        self._reload_lock = asyncio.Lock()
        self.batcher = MicroBatcher(s.max_batch, s.max_wait_ms / 1000.0)
        await self.batcher.start()
        source = (self._board and self._board.source) or s.model
        if source is not None:
            self.handle = await self.batcher.call(load_handle, source, s.device)
        if self._board is not None:
            self._follower = asyncio.create_task(self._board.follow(self._swap))

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        if self.batcher is not None:
            await self.batcher.stop()

    def current(self) -> ModelHandle:
        if self.handle is None or self.batcher is None:
            raise NotReady("no model is loaded: start with --model PATH or POST /reload a path")
        return self.handle

    def readiness(self) -> Readiness:
        if self.handle is None or self.batcher is None:
            return Readiness(status="not ready")
        return Readiness(status="ready", model=str(self.handle.path))

    async def predict(
        self, uploads: list[Upload], top_k: int | None, attention: bool
    ) -> PredictResponse:
        # One handle for the whole request: a reload meanwhile cannot change its input shape.
        handle = self.current()
        assert self.batcher is not None
        classes = handle.classes
        if top_k is None:
            top_k = min(self.settings.top_k, len(classes))
        elif top_k > len(classes):
            raise InvalidInput(
                f"top_k={top_k} is invalid: this model has {len(classes)} classes "
                f"(allowed: 1..{len(classes)})"
            )
        with self.batcher.arrival() as arrival:
            # Headers only (cheap): empty, unknown and oversized images are refused right here.
            opened = [
                image_io.open_image(upload, i, self.settings.max_pixels)
                for i, upload in enumerate(uploads)
            ]
            # Decoding is CPU work on untrusted data: off the event loop, unless the images are
            # so small that a thread hop would cost more than decoding them.
            if sum(image.width * image.height for image in opened) <= INLINE_DECODE_PIXELS:
                batch = _to_batch(opened, uploads, handle.input_shape)
            else:
                batch = await run_in_threadpool(_to_batch, opened, uploads, handle.input_shape)
            future = arrival.submit(handle, batch, top_k, attention)
        results = await future
        return PredictResponse(
            model=str(handle.path),
            predictions=[
                _to_schema(upload.name, result, classes)
                for upload, result in zip(uploads, results, strict=True)
            ],
        )

    def info(self) -> ModelInfo:
        return _model_info(self.current())

    async def reload(self, path: str | None) -> ModelInfo:
        """Load a checkpoint next to the serving one, then swap; on failure keep the old one."""
        assert self._reload_lock is not None and self.batcher is not None
        async with self._reload_lock:
            source = path or (self.handle.source if self.handle else self.settings.model)
            if source is None:
                raise InvalidInput("no path given and none configured: send {\"path\": \"...\"}")
            try:
                handle = await self._load(source)
            except CheckpointError as exc:
                kept = "still serving the old model" if self.handle else "no model is loaded"
                raise BadCheckpoint(f"cannot load {source}: {exc}; {kept}") from exc
            if self._board is not None:
                self._board.announce(source)  # the other --workers follow
            return _model_info(handle)

    async def _swap(self, source: str) -> None:
        assert self._reload_lock is not None
        async with self._reload_lock:
            await self._load(source)

    async def _load(self, source: str) -> ModelHandle:
        """Load next to the serving model, then swap (call with the reload lock held)."""
        assert self.batcher is not None
        handle = await self.batcher.call(load_handle, source, self.settings.device)
        # A single attribute store: requests see either the old or the new handle.
        self.handle = handle
        return handle


def _to_batch(
    opened: list[Image.Image], uploads: list[Upload], shape: tuple[int, int, int]
) -> Tensor:
    c, h, w = shape
    return torch.stack([
        image_to_uint8(image_io.decode(image, upload.describe(i)), c, size=(h, w))
        for i, (image, upload) in enumerate(zip(opened, uploads, strict=True))
    ])


def _to_schema(name: str, result: Prediction, classes: tuple[str, ...]) -> ImagePrediction:
    return ImagePrediction(
        name=name,
        top=[ClassScore(label=classes[i], index=i, probability=p) for i, p in result.top],
        attention=None
        if result.attention is None
        else {n: AttentionWeights(**maps) for n, maps in result.attention.items()},
    )


def _model_info(handle: ModelHandle) -> ModelInfo:
    meta = handle.meta
    cfg = meta.model.to_dict()
    return ModelInfo(
        path=str(handle.path),
        source=handle.source,
        architecture=meta.model.name,
        attention=meta.model.attention,
        attention_kwargs=dict(meta.model.attention_kwargs),
        config=cfg,
        attention_modules=[
            AttentionModule(name=m.name, kind=m.kind, outputs=list(m.outputs), channels=m.channels)
            for m in handle.attention_modules
        ],
        parameters=handle.parameters,
        input_shape=list(handle.input_shape),
        classes=list(handle.classes),
        data=meta.data.to_dict(),
        metrics=meta.metrics,
        train=None if meta.train is None else dataclasses.asdict(meta.train),
        search=meta.extra,
        loaded_at=handle.loaded_at,
        pid=os.getpid(),
    )
