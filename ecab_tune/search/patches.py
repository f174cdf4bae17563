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
4. Tune does not pass the result on which a scheduler stops a trial to the searcher's
   `on_trial_result`, so a trial ASHA stopped at its first rung had no intermediate value:
   every epoch is now recorded once (a retried or resumed epoch is not recorded twice), and each
   trial carries its status, epochs, MACs, latency and folder as user attributes for the
   dashboard.
5. With several objectives Optuna keeps no per-epoch values (`Trial.report` is single-objective
   only): each epoch's objective values are kept as the user attribute `curve` instead, and a
   stopped trial still reaches Optuna as PRUNED (ranked below every complete one).
6. Tune writes result.json and progress.csv in a staging folder and copies them to the
   experiment folder now and then; when a crashed trial is retried, its loggers copy the
   experiment folder's version back over the staging one, which loses the rows written since
   the last copy (seen: a trial that crashed in epoch 2 kept only epochs 2 and 3). `JsonLogger`
   and `CsvLogger` copy it back only for a driver that has no file of its own (`--resume`).
7. `Tuner.restore` brings back the callbacks pickled when the search began: objects of that
   day's code (a resume under newer code crashed on one, and kept Tune's loggers of 6.).
   `restore_tuner` runs this driver's instead, built from the same stored config.
8. A search resumed in another folder (`--snapshot` on another machine) kept every path it
   began with: the searcher's SQLite URL (unpickling it failed once the old folder was gone,
   and wrote to the old study while it was there), ASHA's and the searcher's experiment folder,
   and the trial generator's storage, so trials created after the resume wrote their results
   and checkpoints into the old folder. Tune moves only the trials it restores. The searcher's
   pickles now leave out its Optuna study, which `reopen` opens in the experiment folder where
   it now lies; `restore_tuner` points the rest there.
9. Optuna's `GridSampler` calls `study.stop()` once every grid point is drawn, which works only
   inside `study.optimize`: under Tune's ask and tell it raised from `tell`, so a grid's last
   trial, stopped or diverged, ended as Ray's "Error stopping trial" (a finished one, a
   warning). `TuneGridSampler` leaves the stop to Tune (`num_samples`).

These reach into private attributes of `OptunaSearch`, `AsyncHyperBandScheduler`, `Tuner` and
Optuna's storage: tested with ray 2.60 and optuna 5.0, the minor releases pyproject.toml bounds
them to.
"""

from __future__ import annotations

import copy
import logging
import pickle
from pathlib import Path
from typing import Any

import optuna
from ray.tune import Tuner
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import AsyncHyperBandScheduler
from ray.tune.search import ConcurrencyLimiter, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from ecab_tune import experiment
from ecab_tune.experiment import OPTUNA_DB, TRIAL_PREFIX

log = logging.getLogger(__name__)


class BudgetAwareOptunaSearch(OptunaSearch):
    def __init__(
        self,
        *args: Any,
        max_epochs: int,
        stopped_as_pruned: bool = True,
        experiment_dir: str | Path | None = None,
        **kw: Any,
    ):
        super().__init__(*args, **kw)
        self.max_epochs = max_epochs
        self.stopped_as_pruned = stopped_as_pruned
        self.experiment_dir = None if experiment_dir is None else str(experiment_dir)
        self._steps: dict[str, set[int]] = {}  # the epochs recorded per trial

    def __getstate__(self) -> dict[str, Any]:
        """Without the open Optuna study when it lives in the experiment folder (8. above): the
        running trials are kept by Optuna's id, and `reopen` finds them again."""
        state = self.__dict__.copy()
        if self.experiment_dir is not None:
            state["_storage"] = state["_ot_study"] = None
            state["_ot_trials"] = {k: _optuna_id(t) for k, t in self._ot_trials.items()}
        return state

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        here = self.experiment_dir  # where the experiment lies now, set by `restore_tuner`
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        if here is not None:
            self.reopen(here)

    def _open(self) -> None:
        """A copy unpickled elsewhere (Ray's client mode sends the searcher to the cluster)
        opens the study where the experiment lies on first use."""
        if self._ot_study is None and self.experiment_dir is not None:
            self.reopen(self.experiment_dir)

    def reopen(self, experiment_dir: str | Path) -> None:
        """Open the Optuna study in `experiment_dir`, where the experiment lies now."""
        self.experiment_dir = str(experiment_dir)
        self._storage = optuna.storages.RDBStorage(f"sqlite:///{Path(experiment_dir) / OPTUNA_DB}")
        self._ot_study = optuna.load_study(
            study_name=self._study_name, storage=self._storage, sampler=self._sampler
        )
        self._ot_trials = {
            k: optuna.trial.Trial(self._ot_study, _optuna_id(t)) for k, t in self._ot_trials.items()
        }

    def suggest(self, trial_id: str) -> dict | None:
        self._open()
        new = trial_id not in self._ot_trials
        params = super().suggest(trial_id)
        if new and trial_id in self._ot_trials:
            attrs = {"trial_id": trial_id, "status": experiment.PENDING}
            if self.experiment_dir is not None:
                attrs["trial_folder"] = str(Path(self.experiment_dir, TRIAL_PREFIX + trial_id))
            self._set_attrs(trial_id, **attrs)
        return params

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._open()
        step = result.get(TRAINING_ITERATION)
        if step in self._steps.get(trial_id, ()):
            return  # Tune re-sends a trial's last result when it returns
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Optuna already holds this trial's outcome (see 3. above): nothing more to learn.
            log.info("trial %s already finished in the Optuna study; result not re-told", trial_id)
            self._completed_trials.add(trial_id)
            return
        seen = self._steps.setdefault(trial_id, set())
        if isinstance(self.metric, list) and trial_id in self._ot_trials:
            curve = self._ot_trials[trial_id].user_attrs.get("curve", {})
            curve[str(step)] = [result.get(m) for m in self.metric]
            self._set_attrs(trial_id, curve=curve)
        seen.add(step)
        if len(seen) == 1:
            self._set_attrs(trial_id, status=experiment.RUNNING)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        self._open()
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        if result and not error:
            self.on_trial_result(trial_id, result)  # the result a scheduler stopped it on
        epochs = max(self._steps.get(trial_id, ()), default=0)
        diverged = bool(result and result.get("diverged"))
        if error:
            status = experiment.ERRORED
        else:
            status = experiment.ended_status(epochs, self.max_epochs, diverged=diverged)
        self._set_attrs(
            trial_id,
            status=status,
            epochs=epochs,
            macs=(result or {}).get("macs"),
            latency_ms=(result or {}).get("latency_ms"),
        )
        state = None
        if diverged:
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

    def _set_attrs(self, trial_id: str, /, **attrs: Any) -> None:
        trial = self._ot_trials[trial_id]
        try:
            for key, value in attrs.items():
                if value is not None:
                    trial.set_user_attr(key, value)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # see 3. above: the study already holds this trial's end


class TuneGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its end-of-grid `study.stop()` (see 9. above)."""

    def after_trial(self, *args: Any, **kw: Any) -> None:
        pass


def _optuna_id(trial: optuna.trial.Trial | int) -> int:
    return trial if isinstance(trial, int) else trial._trial_id


def record_unfinished(storage: str, study_name: str, by_trial_id: dict[str, tuple[str, int]]):
    """After an interruption: the status and epochs of each trial Optuna still holds as
    running, as the search's summary names them (`interrupted` or `pending`)."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        status_epochs = by_trial_id.get(trial.user_attrs.get("trial_id", ""))
        if status_epochs is None:
            continue
        status, epochs = status_epochs
        # The storage API takes Optuna's internal id: no public handle reaches a running trial
        # of another process.
        study._storage.set_trial_user_attr(trial._trial_id, "status", status)
        study._storage.set_trial_user_attr(trial._trial_id, "epochs", epochs)


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
        for folder in experiment.trial_folders(Path(experiment_dir)):
            # A line cut short by the crash we are recovering from is skipped.
            for result in experiment.read_results(folder).rows:
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


class _KeepDriverRows:
    """See 6. above; mixed into Tune's logger callbacks."""

    def _restore_from_remote(self, file_name: str, trial: Any) -> None:
        if Path(trial.local_path, file_name).exists():
            return  # this driver wrote it: the stored copy is at most as new
        super()._restore_from_remote(file_name, trial)  # type: ignore[misc]


class JsonLogger(_KeepDriverRows, JsonLoggerCallback):
    """Tune's result.json logger; a retried trial keeps every row (see 6. above)."""


class CsvLogger(_KeepDriverRows, CSVLoggerCallback):
    """Tune's progress.csv logger; a retried trial keeps every row (see 6. above)."""


def restore_tuner(exp_dir: Path, trainable: Any, callbacks: list[Any]) -> Any:
    """The search in `exp_dir`, resumed with its unfinished and errored trials, running
    `callbacks` (see 7. above)."""
    tuner = Tuner.restore(
        str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=True
    )
    tuner._local_tuner.get_run_config().callbacks = callbacks
    # 8. above: wherever the experiment lay when it began, it is here now.
    config = tuner._local_tuner._tune_config
    searcher, scheduler = config.search_alg, config.scheduler
    if isinstance(searcher, BudgetAwareOptunaSearch):
        searcher.reopen(exp_dir)
    if isinstance(scheduler, ResumableASHA):
        scheduler.experiment_dir = str(exp_dir)
    if config.max_concurrent_trials:  # as Tune wraps a Searcher (not a SearchGenerator)
        searcher = ConcurrencyLimiter(searcher, max_concurrent=config.max_concurrent_trials)
        config.max_concurrent_trials = None
    config.search_alg = _MovedGenerator(searcher, exp_dir)
    return tuner


class _MovedGenerator(SearchGenerator):
    """Tune's trial generator, with the experiment it restores moved to `experiment_dir`, as
    Tune moves the trials it restores (8. above)."""

    def __init__(self, searcher: Any, experiment_dir: Path):
        super().__init__(searcher)
        self._experiment_dir = Path(experiment_dir).resolve()

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        storage = copy.copy(self._experiment.storage)
        storage.storage_fs_path = str(self._experiment_dir.parent)
        storage.experiment_dir_name = self._experiment_dir.name
        self._experiment.storage = self._experiment.spec["storage"] = storage
