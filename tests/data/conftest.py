"""Fixtures that keep the dataset readers offline and away from the system's copies."""

from __future__ import annotations

from pathlib import Path

import pytest
import torchvision.datasets

from ecab_tune.data import sources


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
