"""`--snapshot DIR`: a copy of a search's state that can move to another machine.

An experiment folder lives on one machine's disk and holds every checkpoint Ray kept (two or
three a trial, ~2.3 MB each for ResNet-20 with its optimizer state). A snapshot keeps the rest
(Ray's and Optuna's state, every trial's parameters and results) and only the checkpoints a
resume or the final export can still need: every checkpoint of a trial that has not ended (it
continues from them), and those of the best ended trial (for best/; with several objectives
also of every finished trial: the Pareto set is drawn from them). Small enough to commit; `--resume
--snapshot DIR` on a machine without the experiment folder restores it first.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from ecab_tune import experiment
from ecab_tune.experiment import EXPORT_DIR, PARETO_DIR, TRIAL_PREFIX
from ecab_tune.search.results import TrialRow, rank

CHECKPOINT_PREFIX = "checkpoint_"  # Ray Tune's checkpoint folders inside a trial's
RESUMABLE = "tuner.pkl"  # what Tuner.restore reads first: an experiment that can resume


def needed_checkpoints(rows: Sequence[TrialRow], mode: str, several_objectives: bool) -> set[str]:
    """The trials whose checkpoints a snapshot keeps (see the module's docstring)."""
    keep = {r.trial_id for r in rows if r.status not in experiment.ENDED}
    # best/ is the first objective's best over every trial, a stopped one too, whatever the
    # number of objectives.
    ended = rank([r for r in rows if r.status in experiment.ENDED], mode)
    if ended:
        keep.add(ended[0].trial_id)
    if several_objectives:
        keep |= {r.trial_id for r in rows if r.status == experiment.FINISHED}
    return keep


def check_destination(dest: Path, exp_dir: Path) -> None:
    """`--snapshot DEST` is replaced when the search ends: refuse a folder that is something
    else (a typo would delete it) or that lies inside the experiment (it would copy itself)."""
    dest, exp_dir = dest.resolve(), exp_dir.resolve()
    if dest == exp_dir or exp_dir in dest.parents or dest in exp_dir.parents:
        raise ValueError(f"--snapshot {dest} must lie outside the experiment folder {exp_dir}")
    other = not dest.is_dir() or (any(dest.iterdir()) and not (dest / RESUMABLE).is_file())
    if dest.exists() and other:
        raise ValueError(
            f"--snapshot {dest} exists and is no search snapshot (no {RESUMABLE}): the search "
            "would replace it; choose a new folder"
        )


def save_snapshot(exp_dir: Path, dest: Path, keep: set[str]) -> tuple[int, int]:
    """Copy `exp_dir` to `dest` without the checkpoints of trials outside `keep` and without
    the exported models (the search exports them again). Replaces `dest` only once the copy is
    whole. Returns (files, bytes) written."""

    def left_out(folder: str, names: list[str]) -> set[str]:
        here = Path(folder)
        if here == exp_dir:
            return {EXPORT_DIR, PARETO_DIR} & set(names)
        if here.parent == exp_dir and here.name.removeprefix(TRIAL_PREFIX) not in keep:
            return {n for n in names if n.startswith(CHECKPOINT_PREFIX)}
        return set()

    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(exp_dir, partial, ignore=left_out)
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    files = [p for p in dest.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def restore_snapshot(src: Path, exp_dir: Path) -> None:
    """Make `exp_dir` from the snapshot `src`; refuses anything that is not one."""
    if not (src / RESUMABLE).is_file():
        raise ValueError(f"--snapshot {src} is not a search snapshot (no {RESUMABLE})")
    shutil.copytree(src, exp_dir)
