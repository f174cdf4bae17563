"""Readers of the built-in datasets in their published formats: Fashion-MNIST and CIFAR.

Each returns the official (train, test) splits and the dataset's `DataInfo`. torchvision is
only used to download; the files are always parsed here, and CIFAR's pickles with an
unpickler that can build numpy arrays and nothing else.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecab_tune.data.info import DataInfo, DatasetNotFoundError, Split

# Debian's `dataset-fashion-mnist` package installs the idx files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST = DataInfo(
    name="fashion-mnist",
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    channels=1,
    height=28,
    width=28,
    mean=(0.2860,),
    std=(0.3530,),
    crop_padding=2,
    flip=True,
)
# (images, labels) of the train and of the test split, as published.
_FASHION_FILES = (
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)
_IDX_UBYTE = 0x08  # the idx type code of unsigned bytes, the only one Fashion-MNIST uses


def read_fashion_mnist(root: Path, download: bool) -> tuple[Split, Split, DataInfo]:
    """From torchvision's `root/FashionMNIST/raw`, else Debian's folder, else a download."""
    torchvision_dir = root / "FashionMNIST" / "raw"
    folders = (torchvision_dir, DEBIAN_FASHION_MNIST)
    files = next(filter(None, map(_fashion_files, folders)), None)
    if files is None and download:
        _download("FashionMNIST", root, "Fashion-MNIST")
        files = _fashion_files(torchvision_dir)
    if files is None:
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found in {' or '.join(str(f) for f in folders)} (looked for "
            f"{', '.join(n for pair in _FASHION_FILES for n in pair)}, optionally .gz); "
            "download it with --download (download=True; needs internet) or install Debian's "
            "copy with `apt-get install dataset-fashion-mnist`"
        )
    train, test = (_idx_split(files[images], files[labels]) for images, labels in _FASHION_FILES)
    return train, test, FASHION_MNIST


def _fashion_files(folder: Path) -> dict[str, Path] | None:
    """The four idx files in `folder` (each plain or .gz) by name, or None when any is missing."""
    found = {}
    for name in (n for pair in _FASHION_FILES for n in pair):
        path = next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
        if path is None:
            return None
        found[name] = path
    return found


def _idx_split(images_path: Path, labels_path: Path) -> Split:
    images, labels = read_idx(images_path, ndim=3), read_idx(labels_path, ndim=1)
    info = FASHION_MNIST
    if images.shape[1:] != (info.height, info.width):
        raise ValueError(
            f"{images_path}: images are {images.shape[1]}×{images.shape[2]}, "
            f"expected {info.height}×{info.width}"
        )
    if len(labels) != len(images):
        raise ValueError(f"{labels_path}: {len(labels)} labels for {len(images)} images")
    return _split(images[:, None], labels, len(info.classes), labels_path)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes (plain or gzip) with `ndim` dimensions, as a numpy array."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    # gzip.BadGzipFile is an OSError; a damaged deflate stream is a zlib.error, which is not.
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from exc
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:2] != b"\0\0" or raw[2] != _IDX_UBYTE or raw[3] != ndim:
        raise ValueError(
            f"{path}: not an idx file of unsigned bytes with {ndim} dimensions "
            f"(magic number {raw[:4].hex() or 'missing'}, expected 0000080{ndim})"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) != header + math.prod(dims):
        raise ValueError(
            f"{path}: the header says {'×'.join(map(str, dims))} bytes of data "
            f"but the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


@dataclass(frozen=True)
class _Cifar:
    """Where one CIFAR variant keeps its files and labels (torchvision's layout)."""

    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    labels_key: str
    names_key: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    download_class: str


CIFAR = {
    "cifar10": _Cifar(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        "labels",
        "label_names",
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        "CIFAR10",
    ),
    "cifar100": _Cifar(
        "cifar-100-python",
        ("train",),
        "test",
        "meta",
        "fine_labels",
        "fine_label_names",
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        "CIFAR100",
    ),
}
_CIFAR_SIDE = 32
_CIFAR_CROP_PADDING = 4


def read_cifar(name: str, root: Path, download: bool) -> tuple[Split, Split, DataInfo]:
    """CIFAR-10 or CIFAR-100 from torchvision's folder under `root`, downloaded if asked."""
    spec = CIFAR[name]
    folder = root / spec.folder
    names = (*spec.train_files, spec.test_file, spec.meta_file)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing and download:
        _download(spec.download_class, root, name)
        missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{name} not found in {folder} (missing {', '.join(missing)}); download it with "
            "--download (download=True; needs internet)"
        )
    meta_path = folder / spec.meta_file
    names = _entry(_load_pickle(meta_path), spec.names_key, meta_path)
    if not isinstance(names, list | tuple) or not names:
        raise ValueError(f"{meta_path}: {spec.names_key!r} is not a list of class names")
    classes = tuple(_text(c) for c in names)
    info = DataInfo(
        name,
        classes,
        3,
        _CIFAR_SIDE,
        _CIFAR_SIDE,
        spec.mean,
        spec.std,
        crop_padding=_CIFAR_CROP_PADDING,
        flip=True,
    )
    train = _cifar_split([folder / f for f in spec.train_files], spec.labels_key, len(classes))
    test = _cifar_split([folder / spec.test_file], spec.labels_key, len(classes))
    return train, test, info


def _cifar_split(paths: list[Path], labels_key: str, num_classes: int) -> Split:
    images, labels = [], []
    for path in paths:
        batch = _load_pickle(path)
        data, batch_labels = _entry(batch, "data", path), _entry(batch, labels_key, path)
        row = 3 * _CIFAR_SIDE * _CIFAR_SIDE
        if not (
            isinstance(data, np.ndarray)
            and data.dtype == np.uint8
            and data.ndim == 2
            and data.shape[1] == row
        ):
            raise ValueError(f"{path}: 'data' must be a uint8 array of N×{row} pixel rows")
        batch_labels = _labels(batch_labels, labels_key, path)
        if len(batch_labels) != len(data):
            raise ValueError(f"{path}: {len(batch_labels)} labels for {len(data)} images")
        images.append(data)
        labels.append(batch_labels)
    # Each row holds the red, then the green, then the blue 32×32 plane.
    pixels = np.concatenate(images).reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE)
    return _split(pixels, np.concatenate(labels), num_classes, paths[0].parent)


def _labels(value: Any, key: str, path: Path) -> np.ndarray:
    """A batch's labels as int64: a list of integers or a 1-D integer array, nothing else (a
    float would be truncated to another class without a word)."""
    ok = (
        isinstance(value, np.ndarray) and value.ndim == 1 and np.issubdtype(value.dtype, np.integer)
    ) or (
        isinstance(value, list | tuple)
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value)
    )
    if ok:
        try:
            return np.asarray(value, dtype=np.int64)
        except OverflowError:
            pass  # an integer beyond int64: no class index either
    raise ValueError(f"{path}: {key!r} must be a list of class indices (integers)")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, numbers and numpy arrays; refuses every other global,
    so a crafted file cannot call code while it is read.
    """

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing {module}.{name}: dataset pickles may only hold numpy arrays, "
                "lists, strings and numbers"
            )
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle as a dict with str keys (Python 2's files have bytes keys)."""
    try:
        with open(path, "rb") as f:
            # latin1 maps Python 2 byte strings 1:1, as torchvision reads these files.
            content = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # a damaged pickle can fail in many ways; all mean "unreadable"
        raise ValueError(f"{path}: not a readable CIFAR pickle: {exc}") from exc
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    return {_text(k): v for k, v in content.items()}


def _entry(content: dict[str, Any], key: str, path: Path) -> Any:
    if key not in content:
        raise ValueError(f"{path}: no {key!r} entry (has {sorted(content)})")
    return content[key]


def _text(value: str | bytes) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _split(images: np.ndarray, labels: np.ndarray, num_classes: int, source: Path) -> Split:
    """Copies the arrays (they may be read-only views of file buffers) into a checked Split."""
    if len(labels) == 0:
        raise ValueError(f"{source}: no images")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"{source}: labels span {labels.min()}..{labels.max()}, expected 0..{num_classes - 1}"
        )
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))


def _download(class_name: str, root: Path, what: str) -> None:
    """Fetch a dataset into `root` with torchvision, which knows the URLs and checksums."""
    import torchvision.datasets  # only downloading needs torchvision

    try:
        # One split is enough: the download fetches (and verifies) the whole dataset.
        getattr(torchvision.datasets, class_name)(str(root), train=False, download=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; bad checksums RuntimeError
        raise DatasetNotFoundError(f"downloading {what} into {root} failed: {exc}") from exc
