"""Datasets by name and their splits (`ecab_tune.data.loading`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from synthetic import write_cifar10

from ecab_tune.config import DataConfig
from ecab_tune.data import load_data, load_dataset


def test_unknown_dataset_lists_the_allowed_names() -> None:
    with pytest.raises(ValueError, match="cifar10, cifar100, fashion-mnist, imagefolder:PATH"):
        load_dataset("mnist")


def test_subset_larger_than_train_is_refused(tmp_path: Path, no_downloads: None) -> None:
    write_cifar10(tmp_path)
    with pytest.raises(ValueError, match=r"subset=51 .* 50 training images"):
        load_dataset("cifar10", root=tmp_path, subset=51)


def test_load_data_loads_what_a_data_config_names(tmp_path: Path, no_downloads: None) -> None:
    write_cifar10(tmp_path)
    cfg = DataConfig("cifar10", str(tmp_path), subset=40, val_fraction=0.25)
    splits = load_data(cfg, seed=3)
    same = load_dataset("cifar10", root=tmp_path, subset=40, val_fraction=0.25, seed=3)
    assert (len(splits.train), len(splits.val)) == (30, 10)
    assert torch.equal(splits.val.images, same.val.images)
