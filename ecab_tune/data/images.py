"""The one PIL image → uint8 tensor conversion, shared by image-folder datasets and the service."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

_ORIENTATION = 0x0112  # the EXIF tag
_SIXTEEN_BIT = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_MODES = {1: "L", 3: "RGB"}
# EXIF orientation → the turn that shows the image upright (as ImageOps.exif_transpose does).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def image_to_uint8(
    image: Image.Image, channels: int, size: tuple[int, int] | None = None
) -> Tensor:
    """Any PIL image as uint8 C×H×W with `channels` 1 (grey) or 3 (RGB), resized to (H, W).

    Upright as a viewer shows it (a phone photo's EXIF orientation applied, in training and
    serving alike); transparent pixels are composited onto black; resizing is bilinear.
    """
    if channels not in _MODES:
        raise ValueError(f"channels={channels} is invalid: expected 1 or 3")
    # Not ImageOps.exif_transpose: it also writes the EXIF back without the orientation, which
    # fails on tags PIL reads but cannot write (a type the spec does not give that tag).
    orientation = image.getexif().get(_ORIENTATION)
    if isinstance(orientation, int) and orientation in _UPRIGHT:
        image = image.transpose(_UPRIGHT[orientation])
    if image.mode in _SIXTEEN_BIT:
        # PIL's own conversion clips 16-bit greys at 255 (mostly white); rescale them instead.
        deep = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8
        image = Image.fromarray(deep.astype(np.uint8))  # 2-D uint8: mode L
    if _has_alpha(image):
        black = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, image.convert("RGBA"))
    image = image.convert(_MODES[channels])
    if size is not None and (image.height, image.width) != tuple(size):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8))  # a copy: PIL's buffer is read-only
    return pixels.unsqueeze(0) if channels == 1 else pixels.permute(2, 0, 1).contiguous()


def _has_alpha(image: Image.Image) -> bool:
    bands = image.getbands()
    return (
        "A" in bands
        or "a" in bands
        or "transparency" in image.info
        or (image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA")
    )
