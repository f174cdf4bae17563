"""Untrusted bytes → a decoded PIL image, with every failure turned into a clear 4xx.

The conversion to the model's input (mode, size, dtype) is not here: it is the training code's
`ecab_tune.data.image_to_uint8`, imported by the service.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image

from serve.errors import InvalidInput, TooLarge

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
# PIL opens a camera's multi-picture JPEG (an APP2 "MPF" index of further images) as format
# MPO: its first picture is a JPEG like any other, scans and draft mode included.
_JPEG_FORMATS = ("JPEG", "MPO")
# Encoders write up to ~10 scans (libjpeg's progressive script for colour); each scan is a pass
# over every coefficient, and libjpeg accepts thousands of tiny ones (1.9 MB of them held a
# worker's event loop past its 10 s heartbeat). Counted as start-of-scan markers, which
# entropy-coded data cannot contain (an EXIF thumbnail's add a few).
MAX_JPEG_SCANS = 100
_START_OF_SCAN = b"\xff\xda"
_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Upload:
    """One image as received: its bytes and how the client named it (for error messages)."""

    data: bytes
    name: str

    def describe(self, index: int) -> str:
        return f"image {index} ({self.name!r})" if self.name else f"image {index}"


def from_base64(text: str, index: int) -> Upload:
    """Decode one JSON image: plain base64 or a `data:image/...;base64,` URL."""
    payload = _WHITESPACE.sub("", _DATA_URL.sub("", text, count=1))
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"images[{index}] is not valid base64: {exc}") from exc
    return Upload(data, f"images[{index}]")


def open_image(
    upload: Upload, index: int, max_pixels: int, draft_to: tuple[int, int] | None = None
) -> Image.Image:
    """Parse one image's header (cheap), refusing empty, unknown and oversized ones.

    The pixels are not decoded yet (`decode` does it), so a bomb is refused before allocation
    and the caller can choose where the real work runs from the size it now knows. A JPEG is
    set to decode scaled down toward `draft_to` (width, height), never below it; the limit
    applies to the size it will decode to.
    """
    what = upload.describe(index)
    if not upload.data:
        raise InvalidInput(f"{what} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below is the guard; PIL's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(upload.data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise TooLarge(
            f"{what} is a decompression bomb ({exc}); the limit is {max_pixels:,} pixels"
        ) from exc
    except Exception as exc:  # any decoder complaint means "not an image we accept"
        raise InvalidInput(
            f"{what} is not a supported image ({', '.join(FORMATS)}): {_reason(exc)}"
        ) from exc
    if image.format in _JPEG_FORMATS:
        scans = upload.data.count(_START_OF_SCAN)
        if scans > MAX_JPEG_SCANS:
            raise InvalidInput(
                f"{what} is a JPEG of {scans:,} scans; at most {MAX_JPEG_SCANS} are accepted "
                "(encoders write about 10)"
            )
        if draft_to is not None:
            image.draft(None, draft_to)  # type: ignore[arg-type]  # None: keep the mode
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise TooLarge(
            f"{what} is {image.width}×{image.height} = {pixels:,} pixels; "
            f"the limit is {max_pixels:,} (decompression-bomb guard)"
        )
    return image


def decode(image: Image.Image, what: str) -> Image.Image:
    """Decode the pixels (and the EXIF that `image_to_uint8` turns them upright by) of an opened
    image; truncated or corrupt data becomes a clear 422."""
    try:
        image.load()
        image.getexif()  # parsed once, here, where a malformed one is the client's error
    except Exception as exc:  # the decoder's own words say which
        raise InvalidInput(
            f"{what} is a truncated or corrupt {image.format} image: {_reason(exc)}"
        ) from exc
    return image


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
