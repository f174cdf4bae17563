"""Running one search: prepare its config, load the data once, start or join Ray, fit the
Tuner, then export and summarise; Ctrl-C and SIGTERM stop it resumably."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecab_tune import checkpoint, experiment
from ecab_tune.cluster import start_ray
from ecab_tune.config import to_dict
from ecab_tune.data import Splits, load_data
from ecab_tune.experiment import OPTUNA_DB, PARETO_DIR, SEARCH_FILE, SPACE_COPY, SUMMARY_FILE
from ecab_tune.interrupts import sigterm_as_sigint
from ecab_tune.search.config import SearchConfig, resume_command, search_record, stored_config
from ecab_tune.search.export import export_best, export_pareto
from ecab_tune.search.results import TrialRow, format_table, summarize, tally
from ecab_tune.search.snapshot import (
    RESUMABLE,
    check_destination,
    needed_checkpoints,
    restore_snapshot,
    save_snapshot,
)
from ecab_tune.search.space import SearchSpace, load_space
from ecab_tune.search.tuner import build_tuner, check_tracker, tune_settings


@dataclass
class Outcome:
    experiment_dir: Path
    best_dir: Path | None  # None: interrupted and not exported
    best: dict[str, Any] | None
    table: list[TrialRow]  # best first
    interrupted_by: int | None = None  # the signal that stopped the search early
    # The line to print last (how to resume), once Ray is down: its log lines, such as a
    # raylet's disk warning, would otherwise land after it.
    last_word: str | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted_by is not None:
            return 128 + self.interrupted_by  # the shell's convention: 130 SIGINT, 143 SIGTERM
        return 0 if self.best_dir is not None and self.best_dir.is_dir() else 1


def prepare(
    cfg: SearchConfig, given: Mapping[str, Any] | None = None
) -> tuple[SearchConfig, SearchSpace]:
    """The fully specified config and its space; a resumed search's come from its folder
    (`given`: the flags typed, which `stored_config` checks against it)."""
    if cfg.resume:
        if cfg.warm_start is not None:
            raise ValueError("--warm-start seeds a new study; a resumed one already has its trials")
        if cfg.snapshot is not None:
            check_destination(Path(cfg.snapshot), cfg.experiment_dir)
        if not (cfg.experiment_dir / RESUMABLE).is_file():
            restore_experiment(cfg)
        cfg = stored_config(cfg, given)  # a warm-started search's keeps its --warm-start
    space = started_space(cfg) if cfg.resume else load_space(cfg.space)
    cfg = cfg.resolved(space)
    if not cfg.resume and cfg.experiment_dir.exists():
        raise ValueError(
            f"{cfg.experiment_dir} exists: pass --resume to continue it or choose a new --name"
        )
    if cfg.snapshot is not None:  # it is replaced at the end: refuse what is no snapshot now
        check_destination(Path(cfg.snapshot), cfg.experiment_dir)
    if cfg.searcher == "grid":  # a space that forms no grid: before any data or Ray
        points = math.prod(len(values) for values in space.grid().values())
        if cfg.num_samples > points:  # Optuna would draw points again, trained with one seed
            raise ValueError(
                f"--num-samples {cfg.num_samples} exceeds the grid's {points} points: a grid "
                f"trains each once (--num-samples {points})"
            )
    if cfg.tracker != "none":
        check_tracker(cfg.tracker)
    if cfg.warm_start is not None and not cfg.resume:
        from ecab_tune.search.warm_start import check_compatible, load_old_trials

        old_dir = Path(cfg.warm_start).resolve()
        check_compatible(load_old_trials(old_dir)[0], space, old_dir)
        cfg = dataclasses.replace(cfg, warm_start=str(old_dir))
    if cfg.resume:  # the stop's summary: from now on the trials' own files tell (the report)
        (cfg.experiment_dir / SUMMARY_FILE).unlink(missing_ok=True)
    return cfg, space


def started_space(cfg: SearchConfig) -> SearchSpace:
    """A resumed search's space as it started: its folder's copy, for the file may have been
    edited since or lie on another machine; a search older than the copy reads the file."""
    copy = cfg.experiment_dir / SPACE_COPY
    if not copy.is_file():
        return load_space(cfg.space)
    return dataclasses.replace(load_space(copy), name=Path(cfg.space).stem)


def restore_experiment(cfg: SearchConfig) -> None:
    """--resume where the experiment folder is missing (another machine): from --snapshot."""
    exp_dir = cfg.experiment_dir
    if cfg.snapshot is None:
        raise ValueError(f"--resume: no experiment to continue at {exp_dir} (and no --snapshot)")
    if exp_dir.exists():  # a folder without Ray's state: never overwrite what someone left
        raise ValueError(f"--resume: {exp_dir} exists but holds no experiment to continue")
    restore_snapshot(Path(cfg.snapshot), exp_dir)
    print(f"[search] restored {exp_dir} from the snapshot {cfg.snapshot}", flush=True)


def run_search(
    cfg: SearchConfig,
    *,
    trainable: Callable[..., None] | None = None,
    callbacks: list[Any] | None = None,
    given: Mapping[str, Any] | None = None,
) -> Outcome:
    cfg, space = prepare(cfg, given)
    received: list[int] = []  # the stop signals, SIGTERM once it came
    with tune_settings(cfg.verbose):
        try:
            return _search(cfg, space, received, trainable, callbacks)
        except KeyboardInterrupt:
            # A second Ctrl-C, or one outside the trials (loading data, exporting).
            exp_dir = cfg.experiment_dir
            word = (
                f"\ninterrupted: resume with {resume_command(cfg)}"
                if (exp_dir / RESUMABLE).is_file()
                else "\ninterrupted before the search started: nothing to resume"
            )
            signum = received[0] if received else signal.SIGINT
            return Outcome(exp_dir, None, None, [], signum, word)


def _search(
    cfg: SearchConfig,
    space: SearchSpace,
    received: list[int],
    trainable: Callable[..., None] | None,
    callbacks: list[Any] | None,
) -> Outcome:
    from ecab_tune.reporting.document import duration
    from ecab_tune.search.progress import SearchProgress  # imports Ray

    exp_dir, data = cfg.experiment_dir, cfg.data
    assert data is not None, "a prepared config names its data"
    splits = load_data(data, cfg.seed)
    print(
        f"[search] space {space.name!r}: {cfg.num_samples} trials x <= {cfg.max_epochs} epochs, "
        f"{cfg.searcher} + {cfg.scheduler} on {data.dataset} ({len(splits.train)} train, "
        f"{len(splits.val) if splits.val else 0} val, {len(splits.test)} test)",
        flush=True,
    )
    print(f"[search] experiment folder: {exp_dir}", flush=True)
    start_ray(cfg.address, cfg.dashboard, "search")
    metric, mode, max_epochs = cfg.primary.metric, cfg.primary.mode, int(cfg.max_epochs)
    asha = cfg.scheduler == "asha"
    progress = SearchProgress(
        metric=metric,
        mode=mode,
        max_epochs=max_epochs,
        every_s=cfg.progress_every,
        grace=space.scheduler.grace_period if asha else None,
        factor=space.scheduler.reduction_factor,
    )
    started = time.monotonic()
    with sigterm_as_sigint(received):
        tuner = build_tuner(cfg, space, splits, trainable, [progress, *(callbacks or [])])
        if not cfg.resume:
            (exp_dir / SEARCH_FILE).write_text(json.dumps(search_record(cfg), indent=2))
            shutil.copyfile(space.path, exp_dir / SPACE_COPY)
        grid = tuner.fit()
        table = summarize(grid, metric, mode, max_epochs)
        print(
            f"\n[search] {cfg.num_samples} trials in {duration(time.monotonic() - started)}: "
            f"{tally(table, int(cfg.num_samples))}\n" + format_table(table, metric),
            flush=True,
        )
        return conclude(grid, table, cfg, space, splits, received)


def conclude(
    grid: Any,
    table: list[TrialRow],
    cfg: SearchConfig,
    space: SearchSpace,
    splits: Splits,
    received: list[int],
) -> Outcome:
    """Export the best trial (an interrupted search only with --export-partial), write the
    summary, and for an interrupted search record its trials' statuses and say how to resume."""
    exp_dir = cfg.experiment_dir
    unfinished = len(table) < int(cfg.num_samples) or any(
        r.status in (experiment.INTERRUPTED, experiment.PENDING) for r in table
    )
    if unfinished:
        from ecab_tune.search.patches import record_unfinished  # imports Ray

        record_unfinished(
            f"sqlite:///{exp_dir / OPTUNA_DB}",
            str(cfg.name),
            {r.trial_id: (r.status, r.epochs) for r in table},
        )
    best_dir, best = None, None
    if not unfinished or cfg.export_partial:
        try:
            best_dir = export_best(grid, cfg, space, splits, table, partial=unfinished)
        except RuntimeError as exc:
            print(f"[search] {exc}", flush=True)
    if best_dir is not None:
        best = checkpoint.read_meta(best_dir).metrics
        print(
            f"[search] {'partial ' * unfinished}best model: val_acc {best['val_acc']:.2%}, "
            f"test_acc {best['test_acc']:.2%} on {best['test_images']} test images -> {best_dir}",
            flush=True,
        )
    pareto: list[dict[str, Any]] = []
    if len(cfg.objective_list) > 1 and not unfinished:
        pareto = export_pareto(grid, cfg, space, splits, table)
        print(
            f"[search] Pareto set over {cfg.objectives}: {len(pareto)} trial(s) -> "
            f"{exp_dir / PARETO_DIR}",
            flush=True,
        )
    summary = {
        "best": best,
        "interrupted": unfinished,
        "trials": [r.to_dict(cfg.primary.metric) for r in table],
        "pareto": pareto,
        "search": to_dict(cfg),
    }
    (exp_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
    if cfg.snapshot is not None:
        keep = needed_checkpoints(
            table, cfg.primary.mode, several_objectives=len(cfg.objective_list) > 1
        )
        files, size = save_snapshot(exp_dir, Path(cfg.snapshot), keep)
        print(
            f"[search] snapshot: {files} files, {size / 2**20:.1f} MiB (checkpoints of "
            f"{len(keep)} trial(s)) -> {cfg.snapshot}",
            flush=True,
        )
    if not unfinished:
        return Outcome(exp_dir, best_dir, best, table)
    signum = received[0] if received else signal.SIGINT
    word = f"interrupted: resume with {resume_command(cfg)}"
    return Outcome(exp_dir, best_dir, best, table, signum, word)
