"""CIFAR and Fashion-MNIST in their published formats (`ecab_tune.data.sources`)."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets
from synthetic import write_cifar10

from ecab_tune.data import DatasetNotFoundError, load_dataset, sources

from .support import numpy_rng


def _write_cifar100(root: Path, per_class: int = 2) -> None:
    """torchvision's CIFAR-100 folder: str keys, bytes class names, protocol-5 pickles."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = numpy_rng(100)
    for name, n in (("train", 100 * per_class), ("test", 100)):
        fine = [i % 100 for i in range(n)]
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": fine,
            "coarse_labels": [k // 5 for k in fine],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=5))
    meta = {
        "fine_label_names": [f"fine{k}".encode() for k in range(100)],
        "coarse_label_names": [f"coarse{k}".encode() for k in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=5))


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def _write_fashion(folder: Path, gz: bool, n_train: int = 40, n_test: int = 20) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = numpy_rng(28)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for name, array in arrays.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(_idx(array)))
        else:
            (folder / name).write_bytes(_idx(array))
    return arrays


def test_cifar10_folder_loads_in_file_order(tmp_path: Path, no_downloads: None) -> None:
    written = write_cifar10(tmp_path)
    splits = load_dataset("cifar10", root=tmp_path, val_fraction=0)
    assert splits.val is None
    assert splits.info.classes == tuple(f"class{k}" for k in range(10))
    assert (splits.info.channels, splits.info.height, splits.info.width) == (3, 32, 32)
    assert splits.info.crop_padding == 4 and splits.info.mean == (0.4914, 0.4822, 0.4465)
    train_rows = np.concatenate([written[f"data_batch_{i}"] for i in range(1, 6)])
    assert splits.train.images.dtype == torch.uint8 and splits.train.labels.dtype == torch.int64
    assert torch.equal(splits.train.images, torch.from_numpy(train_rows).view(50, 3, 32, 32))
    # A row is the red plane, then green, then blue.
    assert torch.equal(
        splits.test.images[3, 1].flatten(), torch.from_numpy(written["test_batch"][3, 1024:2048])
    )
    assert splits.test.labels.tolist() == [i % 10 for i in range(20)]


def test_cifar_class_names_that_are_no_list_are_named(tmp_path: Path, no_downloads: None) -> None:
    write_cifar10(tmp_path)
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps({b"label_names": 10}, protocol=2))
    with pytest.raises(ValueError, match=r"batches\.meta: 'label_names' is not a list of class"):
        load_dataset("cifar10", root=tmp_path, val_fraction=0)


def test_cifar10_subset_and_validation_are_stratified(tmp_path: Path, no_downloads: None) -> None:
    write_cifar10(tmp_path)
    splits = load_dataset("cifar10", root=tmp_path, subset=40, val_fraction=0.25, seed=1)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 20)
    assert splits.val.labels.bincount(minlength=10).tolist() == [1] * 10
    assert splits.train.labels.bincount(minlength=10).tolist() == [3] * 10
    again = load_dataset("cifar10", root=tmp_path, subset=40, val_fraction=0.25, seed=1)
    assert torch.equal(again.val.images, splits.val.images)
    other = load_dataset("cifar10", root=tmp_path, subset=40, val_fraction=0.25, seed=2)
    assert not torch.equal(other.val.images, splits.val.images)


def test_cifar100_folder_loads_fine_labels(tmp_path: Path, no_downloads: None) -> None:
    _write_cifar100(tmp_path)
    splits = load_dataset("cifar100", root=tmp_path, val_fraction=0.5)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (100, 100, 100)
    assert splits.info.classes[:2] == ("fine0", "fine1") and len(splits.info.classes) == 100
    assert splits.info.std == (0.2673, 0.2564, 0.2762)
    assert splits.test.labels.tolist() == list(range(100))


class _TouchOnLoad:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def test_crafted_cifar_pickle_is_refused_without_running_code(
    tmp_path: Path, no_downloads: None
) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil = {b"data": _TouchOnLoad(marker), b"labels": [0]}
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(ValueError, match=r"refusing .*system") as err:
        load_dataset("cifar10", root=tmp_path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_absent_cifar_names_the_folder(tmp_path: Path, no_downloads: None) -> None:
    with pytest.raises(DatasetNotFoundError, match="--download") as err:
        load_dataset("cifar10", root=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_files_in_torchvision_layout(
    tmp_path: Path, no_debian: Path, no_downloads: None, gz: bool
) -> None:
    arrays = _write_fashion(tmp_path / "FashionMNIST" / "raw", gz=gz)
    splits = load_dataset("fashion-mnist", root=tmp_path, val_fraction=0)
    assert splits.info.classes[0] == "T-shirt/top" and len(splits.info.classes) == 10
    assert (splits.info.channels, splits.info.height, splits.info.width) == (1, 28, 28)
    assert torch.equal(
        splits.train.images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"])
    )
    assert torch.equal(splits.test.labels, torch.arange(20) % 10)
    held = load_dataset("fashion-mnist", root=tmp_path, val_fraction=0.25)
    assert (len(held.train), len(held.val), len(held.test)) == (30, 10, 20)


def test_fashion_mnist_falls_back_to_debian_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_downloads: None
) -> None:
    debian = tmp_path / "debian"
    _write_fashion(debian, gz=True)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", debian)
    splits = load_dataset("fashion-mnist", root=tmp_path / "empty", val_fraction=0)
    assert (len(splits.train), len(splits.test)) == (40, 20)


def test_bad_idx_file_is_named(tmp_path: Path, no_debian: Path, no_downloads: None) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    _write_fashion(raw, gz=False)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.*not an idx file"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_absent_fashion_mnist_offline_names_both_folders(
    tmp_path: Path, no_debian: Path, no_downloads: None
) -> None:
    with pytest.raises(DatasetNotFoundError, match="dataset-fashion-mnist") as err:
        load_dataset("fashion-mnist", root=tmp_path)
    assert str(tmp_path / "FashionMNIST" / "raw") in str(err.value)
    assert str(no_debian) in str(err.value)


def test_fashion_mnist_download_fills_torchvision_folder(
    tmp_path: Path, no_debian: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_download(root: str, train: bool, download: bool) -> None:
        assert download
        _write_fashion(Path(root) / "FashionMNIST" / "raw", gz=False)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake_download)
    splits = load_dataset("fashion-mnist", root=tmp_path, download=True, val_fraction=0)
    assert len(splits.train) == 40


def test_failed_download_reports_the_reason(
    tmp_path: Path, no_debian: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DatasetNotFoundError, match="no route to host"):
        load_dataset("fashion-mnist", root=tmp_path, download=True)


@pytest.mark.skipif(
    not sources.DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is absent"
)
def test_real_fashion_mnist_subset(tmp_path: Path, no_downloads: None) -> None:
    splits = load_dataset("fashion-mnist", root=tmp_path, subset=600, val_fraction=0.1)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (540, 60, 10000)
    assert len(splits.info.classes) == 10
    assert splits.train.labels.bincount().tolist() == [54] * 10


def test_corrupt_gzip_idx_file_is_named(
    tmp_path: Path, no_debian: Path, no_downloads: None
) -> None:
    """A damaged deflate stream raises zlib.error, which is no OSError: it must still be named."""
    raw = tmp_path / "FashionMNIST" / "raw"
    _write_fashion(raw, gz=True)
    path = raw / "train-images-idx3-ubyte.gz"
    damaged = bytearray(path.read_bytes())
    damaged[10] ^= 0xFF  # the first byte of the deflate stream: an invalid block type
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: cannot read"):
        load_dataset("fashion-mnist", root=tmp_path)


@pytest.mark.parametrize("labels", [None, 3, [[1]], ["a"], [0.5], [2**70]])
def test_cifar_labels_that_are_no_list_of_integers_are_named(
    tmp_path: Path, no_downloads: None, labels: object
) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch = pickle.loads(path.read_bytes(), encoding="latin1")
    key = next(k for k in batch if k in ("labels", b"labels"))
    n = len(batch[next(k for k in batch if k in ("data", b"data"))])
    batch[key] = labels * n if isinstance(labels, list) else labels
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_2: 'labels' must be a list of .*integers"):
        load_dataset("cifar10", root=tmp_path, val_fraction=0)
