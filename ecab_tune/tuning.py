"""Small corrections to Ray Tune's ASHA + OptunaSearch pairing.

1. When ASHA stops a trial, `OptunaSearch` tells Optuna the trial is COMPLETE with its low-rung
   score, so TPE ranks a 1-epoch accuracy beside full-budget ones. `BudgetAwareOptunaSearch`
   tells Optuna such trials were PRUNED instead (TPE then ranks them below every complete trial,
   by how far they got), and diverged trials FAILED.
2. `Tuner.restore` brings ASHA back with empty rungs, so a resumed search would stop nobody
   until the rungs refill. `ResumableASHA` replays every trial's recorded results from the
   experiment folder into its rungs before it schedules anything.
3. A driver killed after Optuna stored a trial's end but before Tune's last snapshot comes back
   with `--resume` thinking that trial still runs; its next result must not crash the search.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import optuna
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import AsyncHyperBandScheduler
from ray.tune.search.optuna import OptunaSearch

from ecab_tune.layout import RESULT_FILE

log = logging.getLogger(__name__)


class BudgetAwareOptunaSearch(OptunaSearch):
    def __init__(self, *args: Any, max_epochs: int, stopped_as_pruned: bool = True, **kw: Any):
        super().__init__(*args, **kw)
        self.max_epochs = max_epochs
        self.stopped_as_pruned = stopped_as_pruned

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Optuna already holds this trial's outcome (see 3. above): nothing more to learn.
            log.info("trial %s already finished in the Optuna study; result not re-told", trial_id)
            self._completed_trials.add(trial_id)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        state = None
        if result and result.get("diverged"):
            state = optuna.trial.TrialState.FAIL
        elif (
            self.stopped_as_pruned
            and result
            and not error
            and result.get(TRAINING_ITERATION, self.max_epochs) < self.max_epochs
        ):
            state = optuna.trial.TrialState.PRUNED
        if state is None:
            return super().on_trial_complete(trial_id, result, error)
        # PRUNED keeps the intermediate values reported per epoch; TPE uses them budget-aware.
        self._ot_study.tell(self._ot_trials[trial_id], state=state, skip_if_finished=True)
        self._completed_trials.add(trial_id)


class _TrialRef:
    """The one attribute ASHA's brackets read from a trial."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


class ResumableASHA(AsyncHyperBandScheduler):
    def __init__(self, *, experiment_dir: str | Path, **kw: Any):
        super().__init__(brackets=1, **kw)  # one bracket: replayed results land where they were
        self.experiment_dir = str(experiment_dir)
        self._replayed = False

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if not self._replayed:
            self._replayed = True
            self.replay(self.experiment_dir)
        super().on_trial_add(tune_controller, trial)

    def replay(self, experiment_dir: str | Path) -> int:
        """Feed recorded (iteration, metric) pairs of earlier trials into the rungs."""
        bracket, count = self._brackets[0], 0
        for path in sorted(Path(experiment_dir).glob(f"*/{RESULT_FILE}")):
            for line in path.read_text().splitlines():
                try:
                    result = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by the crash we are recovering from
                value = result.get(self._metric)
                if value is None or self._time_attr not in result:
                    continue
                bracket.on_result(
                    _TrialRef(result["trial_id"]), result[self._time_attr], self._metric_op * value
                )
                count += 1
        if count:
            log.info("ASHA: replayed %d recorded results into the rungs", count)
        return count
