"""A request's images → one uint8 batch, in bounded memory and time.

Every image's header is read first: a JPEG is set to decode in draft mode (scaled by 1/2, 1/4
or 1/8 in the DCT, never below the model's input size), then each image's decoded size must be
within `max_pixels` and the request's sum within `max_request_pixels`, so a request is refused
before any pixel is allocated. Decoding then runs on at most `max_decodes` threads per worker,
one image at a time, each freed as soon as it is converted to the model's small input.

Only a request small in bytes *and* in pixels is handled on the event loop. Bytes bound the
work that pixels do not: a PNG's ancillary chunks are parsed one by one when it is opened, and
a JPEG's scans each pass over every coefficient, however small its draft.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import torch
from PIL import Image
from torch import Tensor

from ecab_tune.data import image_to_uint8
from serve import images as image_io
from serve.errors import TooLarge
from serve.images import Upload

# A 128×128 image decodes in well under 0.1 ms: less than a round trip to a worker thread.
INLINE_DECODE_PIXELS = 128 * 128
# 32 KiB of the worst input measured (a PNG of empty chunks, JPEG scans at the scan limit)
# holds the loop for ~10 ms; a model-sized PNG is a few KiB.
INLINE_DECODE_BYTES = 32 * 1024


class Decoder:
    """Owns the decode slots of one worker (create inside its event loop)."""

    def __init__(
        self,
        max_pixels: int,
        max_request_pixels: int,
        max_decodes: int,
        observe: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self.max_pixels = max_pixels
        self.max_request_pixels = max_request_pixels
        self._slots = asyncio.Semaphore(max_decodes)
        self._observe = observe  # decode time, for the metrics

    async def to_batch(self, uploads: list[Upload], shape: tuple[int, int, int]) -> Tensor:
        """The request's images as one uint8 batch, or a clear 4xx for any of them."""
        if sum(len(upload.data) for upload in uploads) > INLINE_DECODE_BYTES:
            return await self._in_thread(
                lambda: self._convert(self.open(uploads, shape), uploads, shape)
            )
        opened = self.open(uploads, shape)
        if sum(image.width * image.height for image in opened) <= INLINE_DECODE_PIXELS:
            return self._convert(opened, uploads, shape)
        return await self._in_thread(lambda: self._convert(opened, uploads, shape))

    def open(self, uploads: list[Upload], shape: tuple[int, int, int]) -> list[Image.Image]:
        """Parse headers and refuse what is over the limits, before any pixel is decoded."""
        _, h, w = shape
        opened = []
        total = 0
        for i, upload in enumerate(uploads):
            image = image_io.open_image(upload, i, self.max_pixels, draft_to=(w, h))
            total += image.width * image.height
            opened.append(image)
        if total > self.max_request_pixels:
            raise TooLarge(
                f"the request's images add up to {total:,} pixels; the limit is "
                f"{self.max_request_pixels:,} per request (send fewer or smaller images)"
            )
        return opened

    async def _in_thread(self, work: Callable[[], Tensor]) -> Tensor:
        await self._slots.acquire()
        job = asyncio.get_running_loop().run_in_executor(None, work)
        try:
            return await asyncio.shield(job)
        finally:
            # A request cancelled (its deadline passed) leaves its thread decoding: the slot
            # is free only when that thread is, or the bound on decoding memory would not hold.
            if job.done():
                self._slots.release()
            else:
                job.add_done_callback(lambda _: self._slots.release())

    def _convert(
        self, opened: list[Image.Image], uploads: list[Upload], shape: tuple[int, int, int]
    ) -> Tensor:
        c, h, w = shape
        start = time.perf_counter()
        out = torch.empty(len(opened), c, h, w, dtype=torch.uint8)
        for i, upload in enumerate(uploads):
            image, opened[i] = opened[i], None  # type: ignore[call-overload]
            out[i] = image_to_uint8(image_io.decode(image, upload.describe(i)), c, size=(h, w))
            image.close()  # its decoded pixels go now, not when the request ends
        self._observe(time.perf_counter() - start)
        return out
