"""Fixtures shared across test modules."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

# Before anything imports torch. Under xdist the workers share the cores: one torch thread
# each, for them and the processes they start. Two workers' two-thread pools on two cores
# (beside a running search) took a training test from under 2.1 s to 92 s.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from filelock import FileLock
from search_support import quick_args, run_driver


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A fresh embedded Ray ("local": never a cluster some other process started here)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with slow tests first: xdist hands out whole files in this order, and a long file
    started last would leave the other worker idle. The sort is stable: each file stays whole
    and in its own order."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(scope="session")
def quick_search(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The quick-start's search on 600 images, run to the end once for the whole session:
    (experiment folder, output lines). Under xdist the first worker to ask runs it, in the
    folder all workers' temporary folders share, and the others wait for it."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / "quick-search"
    with FileLock(f"{root}.lock"):
        log = root / "out.log"
        if not (root / "done").exists():
            shutil.rmtree(root, ignore_errors=True)  # what a failed attempt left
            root.mkdir()
            code = run_driver(quick_args(root), log, timeout=600)
            assert code == 0, "\n".join(log.read_text().splitlines()[-30:])
            (root / "done").touch()
    return root / "exp", log.read_text().splitlines()
