"""A real two-node Ray cluster on this machine (Ray's own multi-node test cluster: a head and a
worker node, each its own raylet and object store): the search joins it with --address, loses
the worker node mid-trial, and survives a killed driver."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from search_support import (
    REPO,
    SPACE,
    kill_driver_then_resume,
    needs_fmnist,
    search_command,
    trial_results,
)

pytestmark = [pytest.mark.slow, needs_fmnist]

# Long enough trials (6 epochs) that one is mid-flight on the worker node when it dies.
LONG = SPACE.replace("max_epochs: 3", "max_epochs: 6").replace("num_samples: 6", "num_samples: 4")


@pytest.fixture
def cluster() -> Iterator[tuple[object, object]]:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield cluster, worker
    finally:
        cluster.shutdown()


def test_worker_node_dies_mid_search_and_trials_move_to_the_head(cluster, tmp_path: Path):
    cluster_, worker = cluster
    space = tmp_path / "long.yaml"
    space.write_text(LONG)
    exp = tmp_path / "exp"
    args = search_command(
        space,
        tmp_path,
        "--address",
        cluster_.address,
        "--scheduler",
        "fifo",
        "--max-concurrent",
        "2",
    )
    log = tmp_path / "driver.log"  # a file, not a pipe: nobody reads a pipe while we wait
    with log.open("wb") as sink:
        driver = subprocess.Popen(
            args,
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # a trial with a checkpoint, running on the worker
            on_worker = {
                t: rows
                for t, rows in trial_results(exp).items()
                if rows[-1]["node_id"] == worker.node_id and rows[-1]["training_iteration"] < 6
            }
            if on_worker:
                break
            time.sleep(0.2)
        else:
            pytest.fail("no trial ran on the worker node in time")
        cluster_.remove_node(worker, allow_graceful=False)
        driver.wait(timeout=400)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=30)
    assert driver.returncode == 0, log.read_text(errors="replace")[-3000:]

    results = trial_results(exp)
    assert len(results) == 4 and all(r[-1]["training_iteration"] == 6 for r in results.values())
    for trial_id, before in on_worker.items():
        rows = results[trial_id]
        iterations = [r["training_iteration"] for r in rows]
        # Restored from its checkpoint on the head: no epoch trained twice, none skipped.
        assert iterations == list(range(1, 7)), iterations
        assert rows[len(before) - 1]["node_id"] == worker.node_id
        assert rows[-1]["node_id"] == cluster_.head_node.node_id
    assert (exp / "best" / "meta.json").is_file()


def test_killed_driver_resumes_on_the_cluster(cluster, tmp_path: Path):
    cluster_, _ = cluster
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE.replace("num_samples: 6", "num_samples: 4"))
    args = search_command(
        space,
        tmp_path,
        "--address",
        cluster_.address,
        "--scheduler",
        "fifo",
        "--max-concurrent",
        "2",
    )
    kill_driver_then_resume(args, tmp_path / "exp", epochs=3)
    assert len(trial_results(tmp_path / "exp")) == 4
