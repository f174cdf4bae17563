"""Decoding in bounded memory and time: the request's pixel budget, JPEG draft mode, and
where decoding runs."""

from __future__ import annotations

import io
import threading

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin
from serve_support import (
    assert_error,
    assert_still_serving,
    encode,
    jpeg_with_scans,
    make_client,
    noise_png,
    png_claiming,
    post_files,
)


def test_request_pixel_budget(client: TestClient, ckpts) -> None:
    # 16 images each under the per-image limit, together far over the request's budget:
    # refused from their headers alone, before any pixel is decoded.
    each = png_claiming(3000, 3000)
    assert_error(post_files(client, [each] * 16), 413, "144,000,000 pixels", "48,000,000")
    with make_client(ckpts["cbam"], max_pixels=10_000, max_request_pixels=20_000) as c:
        ok = noise_png(1, shape=(100, 100))
        assert post_files(c, [ok, ok], headers={}).status_code == 200
        assert_error(post_files(c, [ok, ok, ok], headers={}), 413, "30,000 pixels", "20,000")
    assert_still_serving(client)


def test_large_jpegs_decode_in_draft_mode(ckpts) -> None:
    # 4000×3000 = 12 M pixels, over a 1 M limit; in draft mode it decodes at 1/8: 500×375.
    photo = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    )
    jpeg, png = encode(photo, "JPEG", quality=80), encode(photo.resize((400, 300)))
    with make_client(ckpts["cbam_rgb"], max_pixels=1_000_000) as c:
        assert post_files(c, [jpeg], headers={}).status_code == 200
        # No draft mode for other formats: a PNG is judged by its full size.
        big_png = encode(Image.new("RGB", (4000, 3000)))
        assert_error(post_files(c, [big_png], headers={}), 413, "12,000,000 pixels")
        assert post_files(c, [png], headers={}).status_code == 200


def test_only_requests_small_in_pixels_and_bytes_are_decoded_on_the_event_loop(
    client: TestClient,
) -> None:
    from serve.decoding import INLINE_DECODE_BYTES, INLINE_DECODE_PIXELS

    decoder = client.app.state.service.decoder
    threads: list[tuple[str, str]] = []

    def recording(step: str):
        real = getattr(decoder, step)

        def record(*args):
            threads.append((step, threading.current_thread().name))
            return real(*args)

        return record

    decoder.open, decoder._convert = recording("open"), recording("_convert")
    loop = client.portal.call(lambda: threading.current_thread().name)
    assert 28 * 28 <= INLINE_DECODE_PIXELS < 200 * 200
    small = noise_png(0)
    # 28×28 pixels, but bytes enough to keep the loop busy: parsed off it as well.
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * INLINE_DECODE_BYTES)
    padded = encode(Image.open(io.BytesIO(small)), pnginfo=info)
    assert len(small) < INLINE_DECODE_BYTES < len(padded)
    flat = encode(Image.new("L", (200, 200), 128))  # 40,000 pixels in a few hundred bytes
    for image in (small, flat, padded):
        assert post_files(client, [image]).status_code == 200
    # A bomb's header is read on the loop and refused there: its pixels are never allocated.
    assert_error(post_files(client, [png_claiming(100_000, 100_000)]), 413, "decompression")
    on_loop = [(step, name == loop) for step, name in threads]
    assert on_loop == [
        ("open", True), ("_convert", True),  # small
        ("open", True), ("_convert", False),  # many pixels
        ("open", False), ("_convert", False),  # many bytes
        ("open", True),  # the bomb
    ]  # fmt: skip


def test_jpeg_scan_floods_are_refused_before_decoding(client: TestClient) -> None:
    from serve.images import MAX_JPEG_SCANS

    # Plain progressive JPEGs (6 scans for grey, 10 for colour) and a few more are fine.
    assert post_files(client, [jpeg_with_scans(MAX_JPEG_SCANS - 6)]).status_code == 200
    # 1024² drafts to 128×128, yet every extra scan is a pass over all 16,384 blocks.
    flood = jpeg_with_scans(20_000)
    assert len(flood) < 1_000_000
    assert_error(post_files(client, [flood]), 422, "20,006 scans", f"at most {MAX_JPEG_SCANS}")
    assert_still_serving(client)


def _as_mpo(jpeg: bytes) -> bytes:
    """`jpeg` as a camera's multi-picture JPEG (MPO): the APP2 "MPF" index of a second image
    right after its start marker, which makes PIL open it as format MPO."""
    two = io.BytesIO()
    Image.new("L", (8, 8)).save(two, "MPO", save_all=True, append_images=[Image.new("L", (8, 8))])
    data, i = two.getvalue(), 2
    while data[i : i + 2] != b"\xff\xe2" or data[i + 4 : i + 8] != b"MPF\x00":
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    mpf = data[i : i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")]
    mpo = jpeg[:2] + mpf + jpeg[2:]
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    return mpo


def test_multi_picture_jpegs_are_jpegs_scan_limit_and_draft_mode_included(ckpts) -> None:
    from serve.images import MAX_JPEG_SCANS

    with make_client(ckpts["cbam"], max_pixels=100_000) as c:
        # PIL names them MPO, not JPEG: neither their scans nor their size escape the limits.
        flood = _as_mpo(jpeg_with_scans(2_000))
        assert_error(post_files(c, [flood], headers={}), 422, "scans", f"{MAX_JPEG_SCANS}")
        photo = np.random.default_rng(1).integers(0, 256, (600, 800), dtype=np.uint8)
        mpo = _as_mpo(encode(photo, "JPEG"))  # 480,000 pixels, drafted to 100×75
        assert post_files(c, [mpo], headers={}).status_code == 200
        assert_still_serving(c)
