"""Untrusted bytes → images: every format and mode accepted, everything else a clear 4xx."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serve_support import (
    FASHION,
    assert_error,
    assert_matches,
    assert_still_serving,
    direct,
    encode,
    make_client,
    noise_png,
    png_claiming,
    post_files,
)


@pytest.mark.parametrize(
    ("fmt", "mode", "kw"),
    [
        ("PNG", "L", {}),
        ("PNG", "RGB", {}),
        ("PNG", "RGBA", {}),
        ("PNG", "P", {}),
        ("PNG", "LA", {}),
        ("PNG", "I;16", {}),
        ("PNG", "1", {}),
        ("JPEG", "RGB", {}),
        ("JPEG", "L", {}),
        ("JPEG", "CMYK", {}),
        ("WEBP", "RGB", {"lossless": True}),
        ("WEBP", "RGBA", {}),
        ("BMP", "RGB", {}),
        ("BMP", "L", {}),
        ("GIF", "P", {}),
    ],
)
def test_predict_accepts_formats_and_modes(client: TestClient, ckpts, fmt, mode, kw) -> None:
    rng = np.random.default_rng(5)
    image = Image.fromarray(rng.integers(0, 256, (37, 41, 3), dtype=np.uint8)).convert(mode)
    blob = encode(image, fmt, **kw)
    r = post_files(client, [blob])
    assert r.status_code == 200, r.text
    probs, maps = direct(ckpts["cbam"], Image.open(io.BytesIO(blob)))
    assert_matches(r.json()["predictions"][0], probs, maps, FASHION.classes)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_photo_is_classified_upright_as_its_exif_orientation_shows_it(
    client: TestClient, ckpts, fmt
) -> None:
    # A phone stores the sensor's pixels and the turn a viewer applies (orientation 6: turn
    # 90° clockwise to show it); the page previews it upright, so the model must see it so.
    upright = Image.fromarray(np.random.default_rng(6).integers(0, 256, (40, 24), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = encode(upright.transpose(Image.Transpose.ROTATE_90), fmt, exif=exif, quality=100)
    r = post_files(client, [stored])
    assert r.status_code == 200, r.text
    seen = Image.open(io.BytesIO(stored))
    seen.load()
    assert seen.size == (40, 24) and Image.open(io.BytesIO(stored)).getexif()[0x0112] == 6
    turned = seen.transpose(Image.Transpose.ROTATE_270)  # upright, by hand
    turned.info.pop("exif", None)  # so that nothing turns it again
    probs, maps = direct(ckpts["cbam"], turned)
    assert_matches(r.json()["predictions"][0], probs, maps, FASHION.classes)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_photo_turned_by_its_exif_is_served_whatever_its_other_tags_hold(
    client: TestClient, fmt
) -> None:
    # Tag 0x0152 is a SHORT by the TIFF spec, here stored as text: PIL reads it, but cannot
    # write it back, which turning a photo by PIL's exif_transpose does.
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Maker"
    good = exif.tobytes()
    odd = good.replace(
        b"MM\x00*\x00\x00\x00\x08\x00\x02\x01\x0f", b"MM\x00*\x00\x00\x00\x08\x00\x02\x01\x52"
    )
    read = Image.Exif()
    read.load(odd)
    assert read[0x0152] == "Maker" and read[0x0112] == 6
    photo = Image.fromarray(np.random.default_rng(7).integers(0, 256, (24, 40), np.uint8))
    answers = [post_files(client, [encode(photo, fmt, exif=e, quality=100)]) for e in (good, odd)]
    assert [r.status_code for r in answers] == [200, 200], answers[1].text
    assert answers[1].json()["predictions"][0]["top"] == answers[0].json()["predictions"][0]["top"]


def test_not_an_image(client: TestClient) -> None:
    assert_error(post_files(client, [b"hello, I am text"]), 422, "img0.png", "not a supported")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'
    assert_error(post_files(client, [svg]), 422, "not a supported image")
    tiff = encode(Image.new("L", (8, 8)), "TIFF")
    assert_error(post_files(client, [tiff]), 422, "not a supported image")
    assert_still_serving(client)


def test_truncated_image(client: TestClient) -> None:
    png = noise_png(3, shape=(64, 64))
    assert_error(post_files(client, [png[: len(png) // 2]]), 422, "truncated")
    jpeg = encode(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)),
        "JPEG",
    )
    assert_error(post_files(client, [jpeg[: len(jpeg) // 2]]), 422, "truncated")
    assert_still_serving(client)


def test_decompression_bomb(client: TestClient, ckpts) -> None:
    assert_error(
        post_files(client, [png_claiming(5000, 9000)]),
        413,
        "45,000,000 pixels",
        "limit is 12,000,000",
    )
    # Beyond PIL's own guard, PIL refuses first; same status, same advice.
    assert_error(
        post_files(client, [png_claiming(50_000, 50_000)]),
        413,
        "decompression bomb",
        "limit is 12,000,000",
    )
    # A real, fully valid image over a lower limit: refused before its pixels are decoded.
    bomb = encode(Image.new("L", (2000, 2000)))
    assert len(bomb) < 20_000
    with make_client(ckpts["cbam"], max_pixels=1_000_000) as c:
        assert_error(post_files(c, [bomb], headers={}), 413, "4,000,000 pixels", "1,000,000")
        assert post_files(c, [noise_png()], headers={}).status_code == 200
    assert_still_serving(client)
