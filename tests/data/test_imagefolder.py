"""Class-per-folder image datasets (`ecab_tune.data.imagefolder`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from ecab_tune.data import DatasetNotFoundError, load_dataset

from .support import solid

_COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "eel": (30, 30, 200)}


def _write_images(folder: Path, per_class: int) -> None:
    for name, colour in _COLOURS.items():
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("RGB", (20 + i, 12), colour)
            if i % 2:
                image = image.convert("RGBA")  # mixed modes, as real folders have
            image.save(folder / name / f"{i}.png")
    (folder / "cat" / "notes.txt").write_text("not an image: skipped by its extension")


def test_imagefolder_holds_out_a_stratified_test_split(tmp_path: Path) -> None:
    _write_images(tmp_path / "pets", per_class=5)
    splits = load_dataset(f"imagefolder:{tmp_path / 'pets'}", image_size=16, val_fraction=0)
    info = splits.info
    assert info.classes == ("cat", "dog", "eel")
    assert (info.channels, info.height, info.width, info.crop_padding) == (3, 16, 16, 2)
    assert (len(splits.train), len(splits.test)) == (12, 3)
    assert splits.test.labels.tolist() == [0, 1, 2]
    # Solid colours stay solid through resizing.
    first = splits.train.images[splits.train.labels == 1][0]
    assert torch.equal(first, solid(_COLOURS["dog"], 16, 16))
    pixels = splits.train.images.permute(1, 0, 2, 3).reshape(3, -1).double() / 255
    assert info.mean == pytest.approx(pixels.mean(1).tolist(), abs=1e-9)
    assert info.std == pytest.approx(pixels.std(1, unbiased=False).tolist(), abs=1e-9)


def test_imagefolder_holds_out_the_same_test_split_at_every_seed(tmp_path: Path) -> None:
    for label in range(2):
        (tmp_path / f"c{label}").mkdir()
        for i in range(10):  # every image its own grey level, to tell which were held out
            Image.new("L", (8, 8), 20 * i + label).save(tmp_path / f"c{label}" / f"{i}.png")
    one, two = (
        load_dataset(f"imagefolder:{tmp_path}", image_size=8, val_fraction=0.25, seed=seed)
        for seed in (0, 1)
    )
    assert torch.equal(one.test.images, two.test.images) and one.info == two.info
    assert not torch.equal(one.val.images, two.val.images)  # the seed draws validation only


def test_imagefolder_with_train_and_test_folders(tmp_path: Path) -> None:
    _write_images(tmp_path / "train", per_class=3)
    _write_images(tmp_path / "test", per_class=1)
    splits = load_dataset(f"imagefolder:{tmp_path}", image_size=8, val_fraction=1 / 3)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 3, 3)
    assert splits.train.images.shape[1:] == (3, 8, 8)


def test_imagefolder_unreadable_image_is_named(tmp_path: Path) -> None:
    _write_images(tmp_path, per_class=2)
    bad = tmp_path / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"broken\.png"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_imagefolder_missing_or_empty_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")
    with pytest.raises(DatasetNotFoundError, match="no class folders"):
        load_dataset(f"imagefolder:{tmp_path}")
