"""The corrections to Ray's Optuna searcher and ASHA, without a search around them."""

import csv
import json
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import optuna
import pyarrow.fs
import pytest
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import TrialScheduler

from ecab_tune.search.config import SearchConfig
from ecab_tune.search.patches import (
    BudgetAwareOptunaSearch,
    CsvLogger,
    JsonLogger,
    ResumableASHA,
    _TrialRef,
)
from ecab_tune.search.space import load_space
from ecab_tune.search.tuner import make_sampler


def make_searcher(stopped_as_pruned=True):
    searcher = BudgetAwareOptunaSearch(
        space=lambda t: {"lr": t.suggest_float("lr", 1e-3, 1.0, log=True)},
        sampler=optuna.samplers.RandomSampler(seed=0),
        max_epochs=3,
        stopped_as_pruned=stopped_as_pruned,
        metric="val_acc",
        mode="max",
    )
    return searcher


def finish(searcher, trial_id, accs, diverged=False):
    searcher.suggest(trial_id)
    for i, acc in enumerate(accs, 1):
        searcher.on_trial_result(trial_id, {"val_acc": acc, "training_iteration": i})
    searcher.on_trial_complete(
        trial_id, {"val_acc": accs[-1], "training_iteration": len(accs), "diverged": diverged}
    )


def test_asha_stopped_trials_reach_optuna_as_pruned():
    searcher = make_searcher()
    finish(searcher, "full", [0.5, 0.7, 0.8])
    finish(searcher, "stopped", [0.3])
    finish(searcher, "nan", [float("nan")], diverged=True)
    states = [t.state for t in searcher._ot_study.get_trials()]
    assert states == [
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.FAIL,
    ]
    pruned = searcher._ot_study.get_trials()[1]
    assert pruned.intermediate_values == {1: 0.3}


def test_a_trial_optuna_already_finished_does_not_crash_a_resumed_search():
    # A driver killed between Optuna storing a trial's end and Tune's snapshot resumes with a
    # searcher that thinks the trial still runs; Tune then replays the trial's results.
    searcher = make_searcher()
    finish(searcher, "t", [0.5, 0.6])
    searcher._completed_trials.discard("t")  # the stale snapshot's view
    searcher.on_trial_result("t", {"val_acc": 0.7, "training_iteration": 3})
    searcher.on_trial_complete("t", {"val_acc": 0.7, "training_iteration": 3})
    (trial,) = searcher._ot_study.get_trials()
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values == {
        1: 0.5,
        2: 0.6,
    }


def test_naive_mode_records_stopped_trials_as_complete():
    searcher = make_searcher(stopped_as_pruned=False)
    finish(searcher, "stopped", [0.3])
    (trial,) = searcher._ot_study.get_trials()
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.3


def test_resumed_asha_remembers_rungs_from_the_experiment_folder(tmp_path):
    for i, acc in enumerate([0.9, 0.8, 0.85]):
        folder = tmp_path / f"trial_{i}"
        folder.mkdir()
        (folder / "result.json").write_text(
            json.dumps({"trial_id": f"t{i}", "training_iteration": 1, "val_acc": acc}) + "\n"
        )
    fresh = ResumableASHA(
        experiment_dir=tmp_path / "empty", max_t=4, grace_period=1, reduction_factor=2
    )
    resumed = ResumableASHA(experiment_dir=tmp_path, max_t=4, grace_period=1, reduction_factor=2)
    for scheduler in (fresh, resumed):
        scheduler.set_search_properties("val_acc", "max")
        scheduler.on_trial_add(None, _TrialRef("new"))
    poor = {"training_iteration": 1, "val_acc": 0.5}
    # Without the replay the first poor trial sails through; with it, it is stopped.
    assert fresh.on_trial_result(None, _TrialRef("new"), poor) == TrialScheduler.CONTINUE
    assert resumed.on_trial_result(None, _TrialRef("new"), poor) == TrialScheduler.STOP


def test_with_two_objectives_stopped_trials_still_reach_optuna_as_pruned():
    searcher = BudgetAwareOptunaSearch(
        space=lambda t: {"lr": t.suggest_float("lr", 1e-3, 1.0, log=True)},
        sampler=optuna.samplers.TPESampler(seed=0),
        max_epochs=2,
        metric=["val_acc", "macs"],
        mode=["max", "min"],
    )
    for trial_id, accs in (("full", [0.5, 0.7]), ("stopped", [0.3])):
        searcher.suggest(trial_id)
        for epoch, acc in enumerate(accs, 1):
            result = {"val_acc": acc, "macs": 100, "latency_ms": 0.5, "training_iteration": epoch}
            searcher.on_trial_result(trial_id, result)
        searcher.on_trial_complete(trial_id, result)
    full, stopped = searcher._ot_study.get_trials()
    assert full.state == optuna.trial.TrialState.COMPLETE and full.values == [0.7, 100]
    assert stopped.state == optuna.trial.TrialState.PRUNED and stopped.values is None
    # Optuna keeps no per-epoch values with two objectives; the curve is a user attribute.
    assert full.user_attrs["curve"] == {"1": [0.5, 100], "2": [0.7, 100]}
    assert stopped.user_attrs["latency_ms"] == 0.5 and stopped.user_attrs["epochs"] == 1
    assert "lr" in searcher.suggest("next")  # TPE samples on from a study with a pruned trial


@pytest.mark.parametrize("last", [[0.5], [0.5, 0.6, 0.7]], ids=["stopped", "finished"])
def test_the_last_point_of_a_grid_reaches_optuna_without_an_error(caplog, last):
    # Optuna's grid calls `study.stop()` once every point is drawn, which outside
    # `study.optimize` (Tune's ask and tell) raised from `tell`: a stopped last point became
    # Ray's "Error stopping trial", a finished one a warning.
    space = load_space("baselines")
    searcher = BudgetAwareOptunaSearch(
        space=space.sample,
        sampler=make_sampler(SearchConfig(space="baselines", searcher="grid"), space),
        max_epochs=3,
        metric="val_acc",
        mode="max",
    )
    points = len(space.grid()["attention"])
    for k in range(points):
        finish(searcher, f"t{k}", last if k == points - 1 else [0.5, 0.6, 0.7])
    trials = searcher._ot_study.get_trials()
    assert len({t.params["attention"] for t in trials}) == points
    assert trials[-1].state == (
        optuna.trial.TrialState.PRUNED if len(last) == 1 else optuna.trial.TrialState.COMPLETE
    )
    assert "Study.stop" not in caplog.text


class FakeTrial:
    """What Tune's logger callbacks read of a trial: its staging and stored folders."""

    def __init__(self, staging, stored):
        self.local_path, self.config, self.checkpoint = str(staging), {"lr": 0.1}, None
        self.storage = SimpleNamespace(
            trial_fs_path=str(stored), storage_filesystem=pyarrow.fs.LocalFileSystem()
        )
        self.init_local_path()

    def init_local_path(self):
        Path(self.local_path).mkdir(parents=True, exist_ok=True)


def json_rows(folder):
    lines = (folder / "result.json").read_text().splitlines()
    return [json.loads(line)["training_iteration"] for line in lines]


def csv_rows(folder):
    return [int(r["training_iteration"]) for r in csv.DictReader((folder / "progress.csv").open())]


@pytest.mark.parametrize(
    ("ours", "tunes", "read"),
    [(JsonLogger, JsonLoggerCallback, json_rows), (CsvLogger, CSVLoggerCallback, csv_rows)],
)
def test_a_retried_trial_keeps_the_rows_its_driver_wrote_since_the_last_copy(
    tmp_path, ours, tunes, read
):
    def retried(logger_cls):
        staging, stored = tmp_path / logger_cls.__name__ / "staging", tmp_path / "stored"
        shutil.rmtree(stored, ignore_errors=True)
        trial, logger = FakeTrial(staging, stored), logger_cls()
        for epoch in (1, 2):  # epoch 1 reached the stored copy, epoch 2 only the staging one
            logger.log_trial_result(epoch, trial, {"training_iteration": epoch})
            if epoch == 1:
                shutil.copytree(staging, stored)
                trial.checkpoint = object()  # saved with epoch 1
        logger.log_trial_end(trial, failed=True)
        logger.log_trial_start(trial)  # the retry: Tune restores the loggers' files
        logger.log_trial_result(3, trial, {"training_iteration": 3})
        logger.on_experiment_end([trial])
        return read(staging)

    assert retried(tunes) == [1, 3]  # Tune's own: epoch 2 lost (the bug this works around)
    assert retried(ours) == [1, 2, 3]


def test_a_new_driver_still_takes_the_stored_rows(tmp_path):
    stored = tmp_path / "stored"
    stored.mkdir()
    (stored / "result.json").write_text(json.dumps({"training_iteration": 1}) + "\n")
    trial = FakeTrial(tmp_path / "staging", stored)  # --resume: a new, empty staging folder
    trial.checkpoint = object()
    logger = JsonLogger()
    logger.log_trial_start(trial)
    logger.log_trial_result(2, trial, {"training_iteration": 2})
    logger.on_experiment_end([trial])
    assert json_rows(tmp_path / "staging") == [1, 2]


def lr_space(trial):  # at module level, to pickle as the search's space does
    return {"lr": trial.suggest_float("lr", 1e-3, 1.0, log=True)}


def test_the_searcher_travels_without_its_study_and_opens_it_where_the_experiment_lies(tmp_path):
    first, moved = tmp_path / "first", tmp_path / "moved"
    first.mkdir()
    searcher = BudgetAwareOptunaSearch(
        space=lr_space,
        sampler=optuna.samplers.RandomSampler(seed=0),
        max_epochs=2,
        metric="val_acc",
        mode="max",
        study_name="s",
        storage=optuna.storages.RDBStorage(f"sqlite:///{first / 'optuna.db'}"),
        experiment_dir=first,
    )
    searcher.suggest("a")
    searcher.on_trial_result("a", {"val_acc": 0.5, "training_iteration": 1})
    # A copy sent to the cluster (Ray's client mode) opens the study on first use.
    assert pickle.loads(pickle.dumps(searcher)).suggest("b") is not None
    # tuner.pkl and the searcher's state, then the folder moved (another machine): the
    # restored searcher tells the moved study, and nothing makes the first folder again.
    searcher.save(str(tmp_path / "searcher.pkl"))
    pickled = pickle.dumps(searcher)
    first.rename(moved)
    restored = pickle.loads(pickled)
    restored.reopen(moved)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("a", {"val_acc": 0.6, "training_iteration": 2})
    assert not first.exists()
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{moved / 'optuna.db'}")
    states = {t.user_attrs["trial_id"]: t.state for t in study.trials}
    assert states == {"a": optuna.trial.TrialState.COMPLETE, "b": optuna.trial.TrialState.RUNNING}
    assert study.trials[0].intermediate_values == {1: 0.5, 2: 0.6}
