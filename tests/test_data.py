"""Datasets read from files in their published formats, batched augmentation, preprocessing."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import pickle
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.datasets
from PIL import Image
from synthetic import write_cifar10

from ecab_tune.data import (
    DataInfo,
    DatasetNotFoundError,
    Split,
    batch_crop,
    batch_flip,
    image_to_uint8,
    iterate_batches,
    load_dataset,
    preprocess,
    sources,
    stratified_split,
)

GREY = DataInfo("grey", ("a", "b"), 1, 6, 5, (0.5,), (0.25,), crop_padding=1, flip=True)
RGB = DataInfo("rgb", ("a", "b"), 3, 5, 7, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), 2, True)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- files in the published formats -------------------------------------------------------


def _write_cifar100(root: Path, per_class: int = 2) -> None:
    """torchvision's CIFAR-100 folder: str keys, bytes class names, protocol-5 pickles."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = _rng(100)
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
    rng = _rng(28)
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


@pytest.fixture
def no_debian(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    empty = tmp_path / "debian-empty"
    empty.mkdir()
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", empty)
    return empty


@pytest.fixture
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail("a download was attempted")

    for name in ("FashionMNIST", "CIFAR10", "CIFAR100"):
        monkeypatch.setattr(torchvision.datasets, name, refuse)


# --- CIFAR --------------------------------------------------------------------------------


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


# --- Fashion-MNIST ------------------------------------------------------------------------


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


# --- image folders ------------------------------------------------------------------------

_COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "eel": (30, 30, 200)}


def _solid(colour: tuple[int, ...], height: int, width: int) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.uint8).view(-1, 1, 1).expand(-1, height, width)


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
    assert torch.equal(first, _solid(_COLOURS["dog"], 16, 16))
    pixels = splits.train.images.permute(1, 0, 2, 3).reshape(3, -1).double() / 255
    assert info.mean == pytest.approx(pixels.mean(1).tolist(), abs=1e-9)
    assert info.std == pytest.approx(pixels.std(1, unbiased=False).tolist(), abs=1e-9)


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


# --- names and arguments ------------------------------------------------------------------


def test_unknown_dataset_lists_the_allowed_names() -> None:
    with pytest.raises(ValueError, match="cifar10, cifar100, fashion-mnist, imagefolder:PATH"):
        load_dataset("mnist")


def test_subset_larger_than_train_is_refused(tmp_path: Path, no_downloads: None) -> None:
    write_cifar10(tmp_path)
    with pytest.raises(ValueError, match=r"subset=51 .* 50 training images"):
        load_dataset("cifar10", root=tmp_path, subset=51)


def test_stratified_split_keeps_class_shares_and_is_seeded() -> None:
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)[torch.randperm(100)]
    chosen, rest = stratified_split(labels, 20, seed=5)
    assert labels[chosen].bincount().tolist() == [12, 6, 2]
    assert torch.equal(torch.cat([chosen, rest]).sort().values, torch.arange(100))
    assert torch.equal(chosen, chosen.sort().values)
    assert torch.equal(stratified_split(labels, 20, seed=5)[0], chosen)
    assert not torch.equal(stratified_split(labels, 20, seed=6)[0], chosen)
    # Rounding leftovers go to the largest remainders, so the count is exact.
    assert len(stratified_split(labels, 7, seed=0)[0]) == 7


# --- tensors: preprocessing, augmentation, batches ----------------------------------------


def test_preprocess_matches_manual_normalisation() -> None:
    images = torch.randint(0, 256, (4, 3, 5, 7), dtype=torch.uint8)
    mean = torch.tensor(RGB.mean).view(1, 3, 1, 1)
    std = torch.tensor(RGB.std).view(1, 3, 1, 1)
    out = preprocess(images, RGB)
    assert out.dtype == torch.float32 and out.device == images.device
    torch.testing.assert_close(out, (images.float() / 255 - mean) / std)
    with pytest.raises(ValueError, match="channels"):
        preprocess(images[:, :1], RGB)


def test_batch_crop_and_flip_equal_per_image_reference() -> None:
    images = torch.randint(0, 256, (9, 3, 5, 7), dtype=torch.uint8)
    offsets = torch.randint(0, 5, (9, 2))
    offsets[0], offsets[1] = torch.tensor([0, 0]), torch.tensor([4, 4])
    cropped = batch_crop(images, 2, offsets)
    for image, out, (dy, dx) in zip(images, cropped, offsets.tolist(), strict=True):
        assert torch.equal(out, F.pad(image, (2, 2, 2, 2))[:, dy : dy + 5, dx : dx + 7])
    flip = torch.tensor([True, False] * 4 + [True])
    flipped = batch_flip(images, flip)
    for image, out, f in zip(images, flipped, flip.tolist(), strict=True):
        assert torch.equal(out, torch.flip(image, dims=[2]) if f else image)


def _id_split(n: int, info: DataInfo) -> Split:
    """Labels are the image indices, so batches say which images they hold."""
    images = torch.randint(
        0,
        256,
        (n, info.channels, info.height, info.width),
        dtype=torch.uint8,
        generator=torch.Generator().manual_seed(n),
    )
    return Split(images, torch.arange(n))


def _train_epoch(split: Split, seed: int, **kw: object) -> list[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(seed)
    return list(iterate_batches(split, GREY, 8, train=True, generator=generator, **kw))


def test_train_batches_are_seeded_full_and_cover_each_image_once() -> None:
    split = _id_split(37, GREY)
    batches = _train_epoch(split, seed=3)
    assert [len(y) for _, y in batches] == [8, 8, 8, 8]  # the partial batch is dropped
    seen = torch.cat([y for _, y in batches])
    assert len(seen.unique()) == 32
    again = _train_epoch(split, seed=3)
    for (xa, ya), (xb, yb) in zip(batches, again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = _train_epoch(split, seed=4)
    assert not torch.equal(torch.cat([y for _, y in other]), seen)


def test_train_images_are_crops_or_flips_of_their_source() -> None:
    split = _id_split(37, GREY)
    plain = preprocess(split.images, GREY)
    augmented = 0
    for x, y in _train_epoch(split, seed=0):
        for image, index in zip(x, y.tolist(), strict=True):
            padded = F.pad(plain[index], (1, 1, 1, 1), value=-GREY.mean[0] / GREY.std[0])
            candidates = [
                padded[:, dy : dy + 6, dx : dx + 5].flip(2)
                if f
                else padded[:, dy : dy + 6, dx : dx + 5]
                for dy, dx, f in itertools.product(range(3), range(3), (False, True))
            ]
            assert any(torch.allclose(image, c) for c in candidates)
            augmented += not torch.allclose(image, plain[index])
    assert augmented > 16


def test_eval_batches_cover_all_images_in_order_unaugmented() -> None:
    split = _id_split(37, GREY)
    batches = list(iterate_batches(split, GREY, 8, train=False))
    assert [len(y) for _, y in batches] == [8, 8, 8, 8, 5]
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(37))
    assert torch.equal(torch.cat([x for x, _ in batches]), preprocess(split.images, GREY))


def test_channels_last_batches() -> None:
    split = _id_split(16, RGB)
    x, _ = next(iterate_batches(split, RGB, 8, train=False, channels_last=True))
    assert x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_batches_are_identical_on_cpu_and_cuda() -> None:
    split = _id_split(37, GREY)
    cpu, cuda = _train_epoch(split, seed=7), _train_epoch(split.to("cuda"), seed=7)
    for (xa, ya), (xb, yb) in zip(cpu, cuda, strict=True):
        assert xb.device.type == "cuda"
        assert torch.equal(ya, yb.cpu())
        torch.testing.assert_close(xa, xb.cpu())


# --- PIL conversion -----------------------------------------------------------------------


def test_image_to_uint8_converts_every_mode() -> None:
    rgb = _rng().integers(0, 256, (6, 10, 3), dtype=np.uint8)
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
    assert torch.equal(out, _solid((7, 8, 9), 4, 8))
    with pytest.raises(ValueError, match="channels"):
        image_to_uint8(image, 2)


# --- records ------------------------------------------------------------------------------


def test_data_info_json_round_trip() -> None:
    restored = DataInfo.from_dict(json.loads(json.dumps(RGB.to_dict())))
    assert restored == RGB and isinstance(restored.classes, tuple)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"channels": None}, ValueError),
        ({"channels": 2}, ValueError),
        ({"classes": "ab"}, TypeError),
        ({"mean": [0.5]}, ValueError),
        ({"std": [0.1, 0.0, 0.1]}, ValueError),
        ({"flip": "yes"}, ValueError),
        ({"colour": True}, ValueError),
    ],
)
def test_data_info_rejects_bad_dicts(change: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        DataInfo.from_dict({**RGB.to_dict(), **change})
    with pytest.raises(KeyError):
        DataInfo.from_dict({k: v for k, v in RGB.to_dict().items() if k != "std"})


def test_split_checks_dtypes() -> None:
    with pytest.raises(ValueError, match="labels must be int64"):
        Split(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="images must be uint8"):
        Split(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64))
