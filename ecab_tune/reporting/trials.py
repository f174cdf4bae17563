"""An experiment folder read back as records, one per trial, from its files alone (so also
while the search runs or after it was killed): what the report ranks, plots and tabulates."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecab_tune.experiment import (
    DIVERGED,
    ERROR_FILE,
    ERRORED,
    EXPORT_DIR,
    PARAMS_FILE,
    PENDING,
    RESULT_FILE,
    RUNNING,
    SEARCH_FILE,
    SPACE_COPY,
    STATUSES,
    SUMMARY_FILE,
    TRIAL_PREFIX,
    ended_status,
    read_results,
    trial_folders,
)
from ecab_tune.search.objectives import Objective, parse_objectives
from ecab_tune.search.space import SearchSpace, SpaceError, load_space

# What a search that recorded no objectives (one older than `--objectives`) went by.
ASSUMED_OBJECTIVES = (Objective("val_acc", "max"),)


@dataclass(frozen=True)
class TrialRecord:
    trial_id: str
    params: dict[str, Any]
    history: tuple[dict[str, Any], ...]  # the last result reported for each epoch, in order
    status: str
    started_at: float  # wall clock; orders the trials as the search launched them

    @property
    def epochs(self) -> int:
        return int(self.history[-1]["epoch"]) if self.history else 0

    @property
    def train_seconds(self) -> float:
        return sum(float(r.get("seconds", 0.0)) for r in self.history)

    @property
    def wall_seconds(self) -> float:
        """Ray Tune's `time_total_s` (training, evaluation, checkpoints), else training alone."""
        if not self.history:
            return 0.0
        return float(self.history[-1].get("time_total_s", self.train_seconds))

    def values(self, metric: str, upto: int | None = None) -> list[float]:
        """The finite values of `metric` per epoch (up to epoch `upto`); a count (MACs,
        parameters) stays an int, so that it reads as the search printed it."""
        return [
            r[metric]
            for r in self.history
            if isinstance(r.get(metric), (int, float))
            and math.isfinite(r[metric])
            and (upto is None or r["epoch"] <= upto)
        ]

    def best(self, metric: str, mode: str, upto: int | None = None) -> float:
        """The best value over epochs, as the search ranks trials (`scope="all"`); NaN if none."""
        values = self.values(metric, upto)
        return (max if mode == "max" else min)(values) if values else math.nan


@dataclass(frozen=True)
class Experiment:
    path: Path
    trials: tuple[TrialRecord, ...]  # in start order
    summary: dict[str, Any] | None  # None: the search has not finished (or was killed)
    space: SearchSpace | None
    space_source: str  # where `space` came from, or why there is none
    max_epochs: int
    max_epochs_source: str
    planned: int  # trials the search was asked for (or those it made, when unknown)
    notes: tuple[str, ...]  # what was unreadable or assumed while loading
    objectives: tuple[Objective, ...] = ASSUMED_OBJECTIVES  # the search's, first what it chose by

    @property
    def partial(self) -> bool:
        return self.summary is None or bool(self.summary.get("interrupted"))

    def counts(self) -> Counter[str]:
        """By status; trials Ray has not made a folder for yet count as pending."""
        counts = Counter(t.status for t in self.trials)
        counts[PENDING] += self.planned - len(self.trials)
        return counts


class ExperimentError(ValueError):
    """A folder that holds no experiment; the message names it."""


def read_json(path: Path) -> Any:
    """The parsed file, or None when it is missing or cut short (a write in progress)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def status_from_files(
    folder: Path, results: list[dict[str, Any]], max_epochs: int, ended: bool
) -> str:
    """What the files tell; `ended`: the search has finished, so nothing is still running."""
    last = results[-1] if results else {}
    if not results and not (folder / PARAMS_FILE).is_file():
        return PENDING  # Ray made its folder; a trial that starts writes its parameters first
    if last.get("diverged"):
        return DIVERGED
    by_budget = ended_status(last.get("epoch", 0), max_epochs)
    # Ray marks the result on which a scheduler stopped a trial as done; one that returned on
    # its own (FIFO) writes no such result and is only known to have ended once the search has.
    if last.get("done"):
        return by_budget
    # A failed trial that Ray restarted has written results since its error.
    error, result = folder / ERROR_FILE, folder / RESULT_FILE
    if error.is_file() and (
        not result.is_file() or error.stat().st_mtime >= result.stat().st_mtime
    ):
        return ERRORED
    return by_budget if ended else RUNNING


def search_settings(exp_dir: Path, summary: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """The search's resolved settings and their file: summary.json's once it ended, else
    search.json's (written when it starts), else none (a search older than search.json)."""
    for settings, file in (
        ((summary or {}).get("search"), SUMMARY_FILE),
        (read_json(exp_dir / SEARCH_FILE), SEARCH_FILE),
    ):
        if isinstance(settings, dict):
            return settings, file
    return {}, ""


def find_space(exp_dir: Path, settings: dict[str, Any]) -> tuple[SearchSpace | None, str]:
    """The space file's copy (best/'s, else the one kept when the search started), else the
    space the settings name; and where from."""
    copies = [c for c in (exp_dir / EXPORT_DIR / SPACE_COPY, exp_dir / SPACE_COPY) if c.is_file()]
    name = settings.get("space")
    source = copies[0] if copies else name
    if source is None:
        return None, f"unknown: no {SEARCH_FILE} or {SUMMARY_FILE} names it"
    try:
        space = load_space(source)
    except SpaceError as exc:
        return None, f"unreadable: {exc}"
    return space, name if str(source) == name else f"{name or 'unnamed'} ({source})"


def load_experiment(exp_dir: Path) -> Experiment:
    folders = trial_folders(exp_dir)
    if not folders:
        what = "does not exist" if not exp_dir.is_dir() else f"holds no {TRIAL_PREFIX}* folders"
        raise ExperimentError(f"{exp_dir} {what}: not an experiment folder of ecab_tune.search")
    summary = read_json(exp_dir / SUMMARY_FILE)
    summary = summary if isinstance(summary, dict) else None
    settings, settings_file = search_settings(exp_dir, summary)
    space, space_source = find_space(exp_dir, settings)
    notes = []
    raw = []
    for folder in folders:
        read = read_results(folder)
        if read.unreadable:
            notes.append(
                f"{folder.name}/{RESULT_FILE}: {read.unreadable} unreadable line(s) skipped"
            )
        raw.append((folder, [r for r in read.rows if "epoch" in r]))

    max_epochs, source = settings.get("max_epochs"), settings_file
    if not isinstance(max_epochs, int):
        longest = max((r[-1]["epoch"] for _, r in raw if r), default=1)
        max_epochs, source = longest, "assumed: the longest trial so far"

    # The search's own word for each trial, once it ended or was interrupted.
    said = {r.get("trial_id"): r.get("status") for r in (summary or {}).get("trials", [])}
    ended = summary is not None and not summary.get("interrupted")
    trials = []
    for folder, results in raw:
        trial_id = folder.name.removeprefix(TRIAL_PREFIX)
        by_epoch = {r["epoch"]: r for r in results}  # a re-reported epoch keeps its last result
        params = read_json(folder / PARAMS_FILE)
        if not isinstance(params, dict):
            params = results[-1].get("config", {}) if results else {}
        starts = [r["fit_started_at"] for r in results if "fit_started_at" in r]
        trials.append(
            TrialRecord(
                trial_id=trial_id,
                params=params,
                history=tuple(by_epoch[e] for e in sorted(by_epoch)),
                status=said[trial_id]
                if said.get(trial_id) in STATUSES
                else status_from_files(folder, results, max_epochs, ended=ended),
                started_at=min(starts) if starts else folder.stat().st_mtime,
            )
        )
    trials.sort(key=lambda t: t.started_at)
    planned = settings.get("num_samples")
    planned = max(planned if isinstance(planned, int) else 0, len(trials))
    objectives = ASSUMED_OBJECTIVES
    if "objectives" in settings:
        try:
            objectives = parse_objectives(str(settings["objectives"]))
        except ValueError as exc:
            notes.append(f"{settings_file}: objectives unreadable ({exc}); assumed val_acc:max")
    return Experiment(
        exp_dir, tuple(trials), summary, space, space_source, max_epochs, source, planned,
        tuple(notes), objectives,
    )  # fmt: skip


def ranked(trials: Sequence[TrialRecord], metric: str, mode: str) -> list[TrialRecord]:
    """Trials with a value of `metric`, best first (ties: the earlier trial)."""
    sign = -1 if mode == "max" else 1
    scored = [t for t in trials if t.values(metric)]
    return sorted(scored, key=lambda t: sign * t.best(metric, mode))
