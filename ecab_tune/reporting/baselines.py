"""Reference points from a study's results (`python -m ecab_tune.compare`): its plain and SE
arms, to mark on the report's accuracy-vs-cost fronts (`--study`)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecab_tune.study.runs import RUNS, read_runs

# The attention of the arms marked: the plain network and squeeze-and-excitation.
BASELINE_ATTENTIONS = ("none", "se")
COSTS = ("macs", "latency_ms", "params")  # what a study row may record of a model's cost


class StudyError(ValueError):
    """A --study that holds no usable baseline; the message says what was expected."""


@dataclass(frozen=True)
class Baseline:
    arm: str
    value: float  # the mean over seeds of each run's best value of the report's metric
    costs: dict[str, float]  # the COSTS the runs recorded (the same for every seed)
    seeds: int


def _best(value: Any, mode: str) -> float:
    """A run's value of a metric: the number, or the best of a per-epoch curve (as the search
    ranks its trials); NaN when it recorded none."""
    values = value if isinstance(value, list) else [value]
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(float(v))]
    return (max if mode == "max" else min)(finite) if finite else math.nan


def load_baselines(path: Path, metric: str, mode: str) -> list[Baseline]:
    """The plain and SE arms of the study at `path` (its folder, or its runs.jsonl): the main
    comparison's completed runs, averaged over seeds."""
    folder = path.parent if path.name == RUNS else path
    if not (folder / RUNS).is_file():
        raise StudyError(f"--study {path}: no {folder / RUNS} (a study's results folder)")
    rows = [
        r
        for r in read_runs(folder)
        if r.get("group") == "main"
        and r.get("status") == "completed"
        and r.get("attention") in BASELINE_ATTENTIONS
    ]
    if not rows:
        raise StudyError(
            f"--study {path}: no completed run of a {' or '.join(BASELINE_ATTENTIONS)} arm"
        )
    baselines = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        runs = [r for r in rows if r["arm"] == arm]
        values = [v for v in (_best(r.get(metric), mode) for r in runs) if not math.isnan(v)]
        if not values:
            continue
        first = runs[0]
        costs = {k: float(first[k]) for k in COSTS if isinstance(first.get(k), (int, float))}
        baselines.append(Baseline(arm, statistics.fmean(values), costs, len(values)))
    if not baselines:
        recorded = sorted({k for r in rows for k in r})
        raise StudyError(
            f"--study {path}: its runs record no {metric}; they record: {', '.join(recorded)}"
        )
    return baselines
