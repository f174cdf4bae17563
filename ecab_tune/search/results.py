"""The one trial table: a row per trial, ranked best first, and how it reads.

The search builds its rows from Ray Tune's results (`summarize`), prints the top of the table
when it ends and stores every row in summary.json; the report builds the same rows from the
experiment folder and shows the same table. No Ray import here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecab_tune import experiment
from ecab_tune.experiment import SUMMARY_FILE, TRIAL_PREFIX

TOP_TRIALS = 10


def short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def params_text(params: dict[str, Any]) -> str:
    # Not "none": that is an attention variant's name. Ray keeps no config for a trial that
    # has not started, so a pending row has no parameters.
    return ", ".join(f"{k}={short(v)}" for k, v in params.items()) or "-"


@dataclass(frozen=True)
class TrialRow:
    trial_id: str
    best: float  # the best value of the ranking metric over the trial's epochs; NaN if none
    epochs: int
    time_s: float  # Tune's time_total_s: the trial's wall time
    status: str  # in experiment's status words
    params: dict[str, Any]

    def to_dict(self, metric: str) -> dict[str, Any]:
        """The row as summary.json stores it, `best` under the metric's name."""
        return {
            "trial_id": self.trial_id,
            metric: self.best,
            "epochs": self.epochs,
            "time_s": self.time_s,
            "status": self.status,
            "params": self.params,
        }


def rank(rows: Sequence[TrialRow], mode: str) -> list[TrialRow]:
    """Best first; rows without a value last (ties keep their order)."""
    sign = -1 if mode == "max" else 1

    def key(row: TrialRow) -> tuple[bool, float]:
        return math.isnan(row.best), 0.0 if math.isnan(row.best) else sign * row.best

    return sorted(rows, key=key)


Cells = tuple[str, ...]


def _number(value: float) -> str:
    """An accuracy or loss to 4 places; a count (MACs, parameters) whole."""
    return f"{value:,}" if isinstance(value, int) else f"{value:.4f}"


def trial_table(rows: Sequence[TrialRow], metric: str) -> tuple[Cells, list[Cells]]:
    """The header and cells of ranked `rows`: what the terminal and the report show."""
    header = ("#", "trial", metric, "epochs", "time", "status", "params")
    cells = [
        (str(k), r.trial_id, _number(r.best), str(r.epochs), f"{r.time_s:.0f}s", r.status,
         params_text(r.params))
        for k, r in enumerate(rows, 1)
    ]  # fmt: skip
    return header, cells


NUMBER_COLUMNS = (0, 2, 3, 4)  # right-aligned in text


def format_table(rows: Sequence[TrialRow], metric: str, limit: int = TOP_TRIALS) -> str:
    """The top `limit` ranked rows as aligned text; the rest are in summary.json."""
    header, cells = trial_table(rows[:limit], metric)
    widths = [max(len(line[i]) for line in (header, *cells)) for i in range(len(header))]
    lines = [
        "  ".join(
            c.rjust(w) if i in NUMBER_COLUMNS else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in (header, *cells)
    ]
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more in {SUMMARY_FILE}")
    return "\n".join(lines)


def tally(rows: Sequence[TrialRow], num_samples: int) -> str:
    """`2 finished, 3 stopped early, 1 pending`; trials Tune had not created yet are pending."""
    counts = Counter(r.status for r in rows)
    counts[experiment.PENDING] += max(0, num_samples - len(rows))
    return ", ".join(f"{counts[s]} {s}" for s in experiment.STATUSES if counts[s])


def trial_status(result: Any, max_epochs: int) -> str:
    """A trial's status from its Ray Tune result: Tune marks the result it ended on `done`."""
    last = result.metrics or {}
    epochs = int(last.get("training_iteration", 0))
    # A trial restored after its driver was killed may end without a `done` result: one that
    # trained its whole budget has ended all the same.
    if last.get("done") or (epochs >= max_epochs and not result.error):
        return experiment.ended_status(epochs, max_epochs, diverged=bool(last.get("diverged")))
    if result.error:
        return experiment.ERRORED
    return experiment.INTERRUPTED if epochs else experiment.PENDING


def finite(value: Any) -> bool:
    """A reported number: val_acc is a float, macs and num_params are ints."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def summarize(grid: Any, metric: str, mode: str, max_epochs: int) -> list[TrialRow]:
    """One row per trial of a Tune `ResultGrid`, ranked: its best `metric`, epochs, time,
    status and parameters."""
    pick = max if mode == "max" else min
    rows = []
    for result in grid:
        history = result.metrics_dataframe
        values = (
            []
            if history is None or metric not in history
            else [v for v in history[metric].tolist() if finite(v)]
        )
        last = result.metrics or {}
        rows.append(
            TrialRow(
                trial_id=Path(result.path).name.removeprefix(TRIAL_PREFIX),
                best=pick(values) if values else math.nan,
                epochs=last.get("training_iteration", 0),
                time_s=last.get("time_total_s", 0.0),
                status=trial_status(result, max_epochs),
                params=dict(result.config or {}),
            )
        )
    return rank(rows, mode)
