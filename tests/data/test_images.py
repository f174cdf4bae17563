"""PIL images to uint8 tensors (`ecab_tune.data.images`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ecab_tune.data import image_to_uint8

from .support import numpy_rng, solid


def test_image_to_uint8_converts_every_mode() -> None:
    rgb = numpy_rng().integers(0, 256, (6, 10, 3), dtype=np.uint8)
    out = image_to_uint8(Image.fromarray(rgb), 3)
    assert out.dtype == torch.uint8 and torch.equal(out, torch.from_numpy(rgb).permute(2, 0, 1))

    grey = Image.fromarray(rgb[..., 0])
    assert torch.equal(image_to_uint8(grey, 1)[0], torch.from_numpy(rgb[..., 0]))
    assert torch.equal(image_to_uint8(grey, 3), torch.from_numpy(rgb[..., 0]).expand(3, 6, 10))

    rgba = Image.new("RGBA", (2, 1), (100, 150, 200, 255))
    rgba.putpixel((1, 0), (100, 150, 200, 0))  # fully transparent: black
    assert image_to_uint8(rgba, 3)[:, 0].tolist() == [[100, 0], [150, 0], [200, 0]]

    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 10, 20, 30, 40, 50, 60])
    palette.putdata([1, 2])
    assert image_to_uint8(palette, 3)[:, 0].tolist() == [[10, 40], [20, 50], [30, 60]]
    palette.info["transparency"] = 2
    assert image_to_uint8(palette, 3)[:, 0].tolist() == [[10, 0], [20, 0], [30, 0]]

    deep = Image.fromarray(np.array([[0, 256, 65535]], dtype=np.uint16))
    assert deep.mode.startswith("I;16")
    assert image_to_uint8(deep, 1).tolist() == [[[0, 1, 255]]]
    assert image_to_uint8(deep.convert("I"), 1).tolist() == [[[0, 1, 255]]]

    bits = Image.new("1", (2, 1))
    bits.putpixel((1, 0), 1)
    assert image_to_uint8(bits, 1).tolist() == [[[0, 255]]]


def test_image_to_uint8_resizes_to_height_width() -> None:
    image = Image.new("RGB", (20, 10), (7, 8, 9))
    out = image_to_uint8(image, 3, size=(4, 8))
    assert out.shape == (3, 4, 8)
    assert torch.equal(out, solid((7, 8, 9), 4, 8))
    with pytest.raises(ValueError, match="channels"):
        image_to_uint8(image, 2)


@pytest.mark.parametrize(
    "orientation,stored_by",
    [(3, "ROTATE_180"), (6, "ROTATE_90"), (8, "ROTATE_270"), (2, "FLIP_LEFT_RIGHT")],
)
def test_image_to_uint8_turns_a_photo_upright_by_its_exif(orientation, stored_by, tmp_path):
    # The same conversion serves image-folder training and the service: both see it upright.
    upright = Image.fromarray(numpy_rng().integers(0, 256, (6, 10, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"
    upright.transpose(getattr(Image.Transpose, stored_by)).save(path, exif=exif)
    with Image.open(path) as stored:
        assert torch.equal(image_to_uint8(stored, 3), image_to_uint8(upright, 3))
