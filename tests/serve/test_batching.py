"""Micro-batching: concurrent requests share forward passes within `max_batch`, off the event
loop."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from serve_support import (
    FASHION,
    FASHION_DIR,
    assert_matches,
    direct,
    encode,
    fashion_test_images,
    make_client,
    noise_png,
    post_files,
    slow_forward,
)


def test_concurrent_requests_share_forward_passes(ckpts) -> None:
    samples = (
        fashion_test_images(16)
        if FASHION_DIR.is_dir()
        else [
            (np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8), 0)
            for i in range(16)
        ]
    )
    blobs = [encode(image) for image, _ in samples]
    with make_client(ckpts["cbam"], max_batch=32) as c:
        calls = slow_forward(c, 0.2)
        barrier = threading.Barrier(len(blobs))

        def one(blob: bytes):
            barrier.wait(timeout=30)
            return post_files(c, [blob], "?top_k=10", headers={})

        with ThreadPoolExecutor(len(blobs)) as pool:
            responses = list(pool.map(one, blobs))
    assert all(r.status_code == 200 for r in responses)
    assert sum(calls) == len(blobs)
    assert len(calls) < len(blobs) / 2, f"forward batch sizes: {calls}"
    for blob, r in zip(blobs, responses, strict=True):
        probs, maps = direct(ckpts["cbam"], Image.open(io.BytesIO(blob)))
        assert_matches(r.json()["predictions"][0], probs, maps, FASHION.classes)


def test_batches_respect_max_batch(ckpts) -> None:
    with make_client(ckpts["cbam"], max_batch=4) as c:
        calls = slow_forward(c, 0.05)
        with ThreadPoolExecutor(12) as pool:
            responses = list(
                pool.map(lambda i: post_files(c, [noise_png(i)], headers={}), range(12))
            )
        # One request of 6 images is larger than max_batch: it runs alone.
        assert post_files(c, [noise_png(i) for i in range(6)], headers={}).status_code == 200
    assert all(r.status_code == 200 for r in responses)
    assert max(calls[:-1]) <= 4 and calls[-1] == 6


def test_inference_does_not_block_the_event_loop(ckpts) -> None:
    with make_client(ckpts["cbam"]) as c:
        slow_forward(c, 1.0)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(post_files, c, [noise_png()], "", {})
            time.sleep(0.2)  # the forward pass is now sleeping in the inference thread
            start = time.monotonic()
            assert c.get("/healthz").status_code == 200
            assert c.get("/model").status_code == 200
            elapsed = time.monotonic() - start
            assert not pending.done()
            assert pending.result(timeout=30).status_code == 200
    assert elapsed < 0.5
