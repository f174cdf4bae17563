"""Fixtures of the serve tests: tiny checkpoints, a client, an experiment folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_support import (
    FASHION,
    RGB32,
    TOKEN,
    encode,
    fashion_test_images,
    make_checkpoint,
    make_client,
)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints of each shape and attention family the service must handle."""
    root = tmp_path_factory.mktemp("ckpts")
    return {
        "cbam": make_checkpoint(root / "cbam", "cbam", FASHION, seed=1),
        "ecab": make_checkpoint(
            root / "ecab",
            "ecab",
            FASHION,
            seed=2,
            attention_kwargs={"layers": "last2", "fusion": "concat"},
        ),
        "bridge_rgb": make_checkpoint(root / "bridge_rgb", "bridge", RGB32, seed=3),
        "cbam_rgb": make_checkpoint(root / "cbam_rgb", "cbam", RGB32, seed=4),
        "bav2_rgb": make_checkpoint(root / "bav2_rgb", "bav2", RGB32, seed=3),
    }


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CBAM model of its own, for tests that do not reload."""
    return make_checkpoint(tmp_path_factory.mktemp("traffic") / "ckpt", "cbam", FASHION, seed=3)


@pytest.fixture
def under_root(ckpts: dict[str, Path], request: pytest.FixtureRequest) -> Path:
    """A fresh folder inside the model root of `client` (the folder holding the checkpoints)."""
    folder = ckpts["cbam"].parent / f"scratch-{request.node.name}"
    folder.mkdir()
    return folder


@pytest.fixture
def client(ckpts: dict[str, Path]) -> Iterator[TestClient]:
    with make_client(ckpts["cbam"], token=TOKEN) as c:
        yield c


@pytest.fixture(scope="module")
def fashion() -> list[bytes]:
    return [encode(img) for img, _ in fashion_test_images(3)]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An experiment folder as the search leaves it: the best export under best/."""
    root = tmp_path_factory.mktemp("runs") / "exp"
    make_checkpoint(root / "best", "cbam", FASHION, seed=5)
    return root
