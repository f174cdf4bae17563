"""`load_dataset`: a dataset by name, as device-ready uint8 splits with a validation hold-out;
`load_data`: the same from a run's `DataConfig`."""

from __future__ import annotations

from pathlib import Path

from ecab_tune.config import DataConfig
from ecab_tune.data.imagefolder import read_imagefolder
from ecab_tune.data.info import DataInfo, Split, Splits
from ecab_tune.data.sampling import stratified_split
from ecab_tune.data.sources import CIFAR, read_cifar, read_fashion_mnist

IMAGEFOLDER = "imagefolder:"
DATASETS = (*CIFAR, "fashion-mnist", f"{IMAGEFOLDER}PATH")


def load_dataset(
    name: str,
    *,
    root: str | Path = "data",
    download: bool = False,
    val_fraction: float = 0.1,
    subset: int | None = None,
    seed: int = 0,
    image_size: int = 32,
) -> Splits:
    """Load `name` (see `DATASETS`) from `root`.

    `subset` draws that many training images (stratified, seeded); `val_fraction` of the
    training images (after `subset`) is then held out, stratified, as `val` (0: no `val`).
    The test split is always the dataset's full official test split (an image folder without
    one holds out a fixed 20 %): the same for every seed.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} is invalid: expected 0 <= f < 1")
    train, test, info = _read(name, Path(root), download, image_size)
    if subset is not None:
        if not 0 < subset <= len(train):
            raise ValueError(
                f"subset={subset} is invalid: {info.name} has {len(train)} training images"
            )
        train = train.select(stratified_split(train.labels, subset, seed)[0])
    val = None
    if val_fraction > 0:
        n_val = round(val_fraction * len(train))
        if not 0 < n_val < len(train):
            raise ValueError(
                f"val_fraction={val_fraction} of {len(train)} training images leaves "
                f"{n_val} for validation and {len(train) - n_val} for training"
            )
        val_idx, train_idx = stratified_split(train.labels, n_val, seed)
        train, val = train.select(train_idx), train.select(val_idx)
    return Splits(train, val, test, info)


def load_data(cfg: DataConfig, seed: int) -> Splits:
    """The splits `cfg` describes, drawn with `seed` (subset and validation hold-out)."""
    return load_dataset(
        cfg.dataset,
        root=cfg.data_dir,
        download=cfg.download,
        val_fraction=cfg.val_fraction,
        subset=cfg.subset,
        seed=seed,
        image_size=cfg.image_size,
    )


def _read(name: str, root: Path, download: bool, image_size: int) -> tuple[Split, Split, DataInfo]:
    if name == "fashion-mnist":
        return read_fashion_mnist(root, download)
    if name in CIFAR:
        return read_cifar(name, root, download)
    if name.startswith(IMAGEFOLDER) and len(name) > len(IMAGEFOLDER):
        return read_imagefolder(Path(name[len(IMAGEFOLDER) :]), image_size)
    raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
