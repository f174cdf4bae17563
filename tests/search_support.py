"""Shared by the search tests: a tiny space, reading trial results, a driver killed mid-search."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecab_tune.experiment import read_results, trial_folders

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not FMNIST.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (scripts/setup.sh installs it)",
)
REPO = Path(__file__).resolve().parent.parent

# Rungs only at epoch 2 (grace 2, max 3): a crash after epoch 1 is always retried, and ASHA
# still has a decision to make.
SPACE = """
defaults: {model: resnet8, attention: ecab, width: 0.5, dataset: fashion-mnist,
           max_epochs: 3, num_samples: 6, train: {batch_size: 64, warmup_epochs: 0.2}}
scheduler: {grace_period: 2, reduction_factor: 2}
params:
  attention.fusion: {type: choice, values: [sum, concat]}
  lr: {type: loguniform, low: 0.001, high: 0.5}
"""


# The quick-start's space on 600 images, 3 epochs, one trial at a time (so a SIGINT finds one
# trial mid-way and the others not started, and which trials ASHA stops depends on the seed
# alone, not on the order in which concurrent trials report), ASHA with its grace period of 1.
QUICK_EPOCHS = 3


def quick_args(storage: Path | str, *extra: str, space: Path | str = "quick") -> list[str]:
    return search_command(
        space, storage, "--num-samples", "4", "--max-epochs", str(QUICK_EPOCHS),
        "--max-concurrent", "1", *extra,
    )  # fmt: skip


def trial_results(exp_dir: Path) -> dict[str, list[dict]]:
    """Every trial's reported rows, by trial id (a line cut short by a kill is skipped)."""
    out = {}
    for folder in trial_folders(exp_dir):
        rows = read_results(folder).rows
        if rows:
            out[rows[0]["trial_id"]] = rows
    return out


def search_command(space: Path | str, storage: Path | str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ecab_tune.search",
        "--space",
        str(space),
        "--name",
        "exp",
        "--storage",
        str(storage),
        "--subset",
        "600",
        "--no-dashboard",
        *extra,
    ]


def kill_driver_then_resume(args: list[str], exp: Path, epochs: int, finished: int = 2) -> None:
    """Kill the driver once `finished` trials are done; `--resume` must finish the rest without
    re-running them."""
    driver = subprocess.Popen(
        args,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            done = [r for r in trial_results(exp).values() if r[-1]["training_iteration"] == epochs]
            if len(done) >= finished:
                time.sleep(6)  # let Tune's periodic experiment snapshot include them
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the search did not finish {finished} trials in time")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    before = {
        t: len(rows)
        for t, rows in trial_results(exp).items()
        if rows[-1]["training_iteration"] == epochs
    }
    assert len(before) >= finished

    resumed = subprocess.run(
        [*args, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    after = trial_results(exp)
    assert all(r[-1]["training_iteration"] == epochs for r in after.values())
    for trial_id, count in before.items():
        assert len(after[trial_id]) == count, f"finished trial {trial_id} was re-run"
    assert (exp / "best" / "meta.json").is_file()


def run_driver(args: list[str], log: Path, timeout: float = 300) -> int:
    """Run the search CLI to its end; its stdout and stderr go to `log`."""
    with log.open("w") as out:
        return subprocess.run(
            args,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        ).returncode


def signal_mid_trial(args: list[str], exp: Path, log: Path, sig: int, max_epochs: int) -> int:
    """Start the search, send `sig` once a trial has reported an epoch but not its last, and
    return the driver's exit code (its output goes to `log`)."""
    with log.open("w") as out:
        driver = subprocess.Popen(
            args,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 240
        try:
            while time.monotonic() < deadline:
                epochs = [r[-1]["training_iteration"] for r in trial_results(exp).values()]
                if any(0 < e < max_epochs for e in epochs):
                    break
                time.sleep(0.2)
            else:
                pytest.fail("no trial reported an epoch in time")
            driver.send_signal(sig)
            return driver.wait(timeout=120)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
