"""A folder of images, one sub-folder per class, decoded as the service decodes uploads."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from ecab_tune.data.images import image_to_uint8
from ecab_tune.data.info import DataInfo, DatasetNotFoundError, Split
from ecab_tune.data.sampling import stratified_split

TEST_FRACTION = 0.2  # held out as the test split when the folder has no train/ and test/
# The hold-out is the folder's test split, not a run's: drawn with the run's seed, each seed
# would score on other images (some another seed trained on) and normalise by other statistics.
TEST_SEED = 0
CHANNELS = 3
MIN_STD = 1 / 255  # one grey level: keeps normalisation finite for a single-colour channel
LAYOUT = "PATH/<class>/<image> or PATH/train/<class>/<image> with PATH/test/<class>/<image>"


def read_imagefolder(path: Path, image_size: int) -> tuple[Split, Split, DataInfo]:
    """Train/test from `path/train` and `path/test`, else a fixed stratified hold-out of `path`."""
    if (path / "train").is_dir() and (path / "test").is_dir():
        classes = _class_names(path / "train")
        train = _read_images(path / "train", classes, image_size, every_class=True)
        test = _read_images(path / "test", classes, image_size, every_class=False)
    else:
        classes = _class_names(path)
        images = _read_images(path, classes, image_size, every_class=True)
        n_test = round(TEST_FRACTION * len(images))
        if not 0 < n_test < len(images):
            raise ValueError(
                f"{path} has {len(images)} images: too few to hold out {TEST_FRACTION:.0%} "
                "as a test split"
            )
        test_idx, train_idx = stratified_split(images.labels, n_test, TEST_SEED)
        train, test = images.select(train_idx), images.select(test_idx)
    mean, std = channel_stats(train.images)
    info = DataInfo(
        name=f"imagefolder:{path}",
        classes=classes,
        channels=CHANNELS,
        height=image_size,
        width=image_size,
        mean=mean,
        std=std,
        crop_padding=image_size // 8,
        flip=True,
    )
    return train, test, info


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 N×C×H×W images, on the 0..1 scale."""
    # A histogram per channel: exact, and no float copy of the whole dataset.
    levels = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        share = counts / counts.sum()
        mean = float((share * levels).sum())
        var = float((share * levels**2).sum()) - mean**2
        means.append(mean)
        stds.append(max(math.sqrt(max(var, 0.0)), MIN_STD))
    return tuple(means), tuple(stds)


def _class_names(folder: Path) -> tuple[str, ...]:
    if not folder.is_dir():
        raise DatasetNotFoundError(f"image folder {folder} does not exist; expected {LAYOUT}")
    classes = _subfolders(folder)
    if not classes:
        raise DatasetNotFoundError(f"{folder} has no class folders; expected {LAYOUT}")
    return classes


def _subfolders(folder: Path) -> tuple[str, ...]:
    return tuple(sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name[0] != "."))


def _read_images(folder: Path, classes: tuple[str, ...], size: int, every_class: bool) -> Split:
    """All images under `folder/<class>/`; `every_class` requires each class to have some."""
    unknown = [name for name in _subfolders(folder) if name not in classes]
    if unknown:
        raise ValueError(f"{folder}: class folders {unknown} are not among the train classes")
    extensions = Image.registered_extensions()
    images, labels = [], []
    for label, name in enumerate(classes):
        class_dir = folder / name
        files = sorted(
            p
            for p in class_dir.glob("*")
            if p.is_file() and p.name[0] != "." and p.suffix.lower() in extensions
        )
        if every_class and not files:
            raise ValueError(f"class folder {class_dir} has no images")
        images.extend(_decode(p, size) for p in files)
        labels.extend([label] * len(files))
    if not images:
        raise DatasetNotFoundError(f"{folder} holds no images; expected {LAYOUT}")
    return Split(torch.stack(images), torch.tensor(labels, dtype=torch.int64))


def _decode(path: Path, size: int) -> Tensor:
    try:
        with Image.open(path) as image:
            return image_to_uint8(image, CHANNELS, size=(size, size))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: not a readable image: {exc}") from exc
