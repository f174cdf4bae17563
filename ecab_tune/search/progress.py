"""The search's terminal output: a status line at a steady interval and a line per ended trial.

A Ray Tune `Callback`, so it sees what Tune's own reporters see; it only ever prints whole
lines (no cursor movement), so a log file reads like the terminal did.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

from ray.tune import Callback

from ecab_tune import experiment
from ecab_tune.reporting.document import duration
from ecab_tune.search.results import finite, params_text

TAG = "[search]"


def decision_points(
    max_epochs: int, grace: int | None = None, factor: float = 3.0
) -> tuple[int, ...]:
    """The epochs after which a trial may end: ASHA's rungs where Ray's AsyncHyperBandScheduler
    puts them (grace * factor**k), then the budget; without a grace period (FIFO), the budget."""
    if grace is None:
        return (max_epochs,)
    grace = min(grace, max_epochs)
    rungs = int(math.log(max_epochs / grace) / math.log(factor) + 1)
    points = {min(math.ceil(grace * factor**k), max_epochs) for k in range(rungs)}
    return tuple(sorted(points | {max_epochs}))


def expected_epochs(done: int, points: tuple[int, ...], factor: float) -> float:
    """The epochs a trial still running after `done` is expected to end at: it reaches the next
    decision point, and passes each one with ASHA's chance of 1 in `factor`."""
    ahead = [p for p in points if p > done] or [done]
    total, chance = float(ahead[0]), 1.0
    for here, nxt in itertools.pairwise(ahead):
        chance /= factor
        total += chance * (nxt - here)
    return total


ENDED_TO_TRUST = 5  # ended trials before their mean replaces the model for pending ones


def epochs_left(
    done: dict[str, int], pending: int, ended: list[int], points: tuple[int, ...], factor: float
) -> float:
    """Epochs still to train: running trials (by id -> epochs done) to their expected end;
    pending ones as long as the trials that ended did on average, once a few have ended (async
    ASHA promotes early trials more often than 1 in `factor`), by the model before."""
    per_trial = (
        sum(ended) / len(ended)
        if len(ended) >= ENDED_TO_TRUST
        else expected_epochs(0, points, factor)
    )
    running = sum(expected_epochs(d, points, factor) - d for d in done.values() if d < points[-1])
    return running + pending * per_trial


class SearchProgress(Callback):
    def __init__(
        self,
        *,
        metric: str,
        mode: str,
        max_epochs: int,
        every_s: float,
        grace: int | None = None,
        factor: float = 3.0,
    ):
        """`grace` and `factor`: ASHA's, to foresee where trials end (None: FIFO)."""
        self.metric, self.mode, self.max_epochs, self.every_s = metric, mode, max_epochs, every_s
        self.points, self.factor = decision_points(max_epochs, grace, factor), factor
        self._start = time.monotonic()
        self._last_line = self._start
        self._epochs_this_run = 0
        self._total = 0
        # Each trial's best finite value seen here: Ray's metric_analysis keeps max(NaN, x) =
        # NaN, so a trial whose last report is NaN (it diverged) would lose its best there.
        self._finite_best: dict[str, float] = {}

    def setup(self, total_num_samples: int | None = None, **info: Any) -> None:
        self._start = self._last_line = time.monotonic()
        self._epochs_this_run = 0
        self._total = total_num_samples or 0

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        self._epochs_this_run += 1
        value = result.get(self.metric)
        if finite(value):
            seen = self._finite_best.get(trial.trial_id, value)
            self._finite_best[trial.trial_id] = self._pick(value, seen)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self._last_line >= self.every_s:
            self._last_line = now
            print(self.status_line(trials, now), flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        epochs = int(last.get("training_iteration", 0))
        status = experiment.ended_status(
            epochs, self.max_epochs, diverged=bool(last.get("diverged"))
        )
        self._trial_line(trial, status, epochs)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epochs = int((trial.last_result or {}).get("training_iteration", 0))
        self._trial_line(trial, experiment.ERRORED, epochs, f" ({trial.path}/error.txt)")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epochs = int((trial.last_result or {}).get("training_iteration", 0))
        print(
            f"{TAG} trial {trial.trial_id} failed after epoch {epochs}; "
            "retrying from its last checkpoint",
            flush=True,
        )

    def _trial_line(self, trial: Any, status: str, epochs: int, note: str = "") -> None:
        best = self._best_of(trial)
        value = f"{self.metric} {best:.4f}" if math.isfinite(best) else f"no {self.metric}"
        print(
            f"{TAG} trial {trial.trial_id} {status} after {epochs}/{self.max_epochs} epochs: "
            f"{value} ({params_text(trial.config)}){note}",
            flush=True,
        )

    def _pick(self, *values: float) -> float:
        return max(values) if self.mode == "max" else min(values)

    def _best_of(self, trial: Any) -> float:
        """The best finite value the trial reported: Ray's record (which a resumed trial
        restores), or this run's own when Ray's went NaN."""
        ray_value = trial.metric_analysis.get(self.metric, {}).get(self.mode)
        values = [float(v) for v in (ray_value, self._finite_best.get(trial.trial_id)) if finite(v)]
        return self._pick(*values) if values else math.nan

    def status_line(self, trials: list, now: float) -> str:
        counts = dict.fromkeys(experiment.STATUSES, 0)
        counts[experiment.PENDING] = max(0, self._total - len(trials))  # not created yet
        running_epochs, ended_epochs = {}, []
        for trial in trials:
            last = trial.last_result or {}
            epochs = int(last.get("training_iteration", 0))
            status = experiment.tune_status(
                trial.status,
                epochs,
                self.max_epochs,
                diverged=bool(last.get("diverged")),
                search_ended=False,
            )
            counts[status] += 1
            if status == experiment.RUNNING:
                running_epochs[trial.trial_id] = epochs
            elif status in experiment.ENDED:
                ended_epochs.append(epochs)
        # Running and pending always, so the line says how much is left; the rest once seen.
        tally = ", ".join(
            f"{counts[s]} {s}"
            for s in (experiment.RUNNING, *experiment.ENDED, experiment.PENDING)
            if counts[s] or s in (experiment.RUNNING, experiment.PENDING)
        )
        elapsed = now - self._start
        parts = [f"{TAG} {duration(elapsed)}  {tally}", self._best_text(trials)]
        left = epochs_left(
            running_epochs, counts[experiment.PENDING], ended_epochs, self.points, self.factor
        )
        if self._epochs_this_run and elapsed > 0:
            parts.append(f"~{duration(left * elapsed / self._epochs_this_run)} left")
        else:
            parts.append("time left: after the first epoch")
        return "  |  ".join(parts)

    def _best_text(self, trials: list) -> str:
        scored = [(self._best_of(t), t) for t in trials]
        scored = [(v, t) for v, t in scored if math.isfinite(v)]
        if not scored:
            return f"best {self.metric}: none yet"
        pick = max if self.mode == "max" else min
        value, trial = pick(scored, key=lambda vt: vt[0])
        return (
            f"best {self.metric} {value:.4f} (trial {trial.trial_id}: {params_text(trial.config)})"
        )
