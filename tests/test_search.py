import json
import math

import optuna
import pytest
from ray.tune.schedulers import TrialScheduler
from search_support import (
    SPACE,
    kill_driver_then_resume,
    needs_fmnist,
    search_command,
    trial_results,
)

from ecab_tune import checkpoint
from ecab_tune.data import load_dataset
from ecab_tune.engine import evaluate
from ecab_tune.search import SearchConfig, main, run_search
from ecab_tune.trainable import CRASH_MARKER
from ecab_tune.tuning import BudgetAwareOptunaSearch, ResumableASHA, _TrialRef


# ---------------------------------------------------------------- searcher / scheduler units
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


# ---------------------------------------------------------------- CLI edge
@pytest.mark.parametrize(
    "argv,words",
    [
        (["--num-samples", "0"], "--num-samples=0 must be >= 1"),
        (["--space", "nope"], "built-in spaces"),
        (["--resume"], "--resume needs --name"),
        (["--gpus-per-trial", "1.5"], "whole number"),
        (["--scheduler", "pbt"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_flags_clearly(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert words in capsys.readouterr().err


def test_resume_of_a_missing_experiment_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--space", "quick", "--storage", str(tmp_path), "--name", "ghost", "--resume"])
    assert "no experiment to continue" in capsys.readouterr().err


# ---------------------------------------------------------------- real Ray Tune runs
@pytest.mark.slow
@needs_fmnist
def test_search_end_to_end_with_asha_crash_recovery_and_export(local_ray, tmp_path):
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    cfg = SearchConfig(
        space=str(space),
        name="e2e",
        storage=str(tmp_path / "runs"),
        subset=600,
        max_concurrent=2,
        dashboard=False,
    )
    outcome = run_search(cfg, crash_after_epoch=1)

    results = trial_results(outcome.experiment_dir)
    assert len(results) == 6
    epochs = {tid: rows[-1]["training_iteration"] for tid, rows in results.items()}
    assert min(epochs.values()) < 3 < max(epochs.values()) + 1, epochs  # ASHA stopped some

    crashed = (outcome.experiment_dir / CRASH_MARKER).read_text()
    iterations = [row["training_iteration"] for row in results[crashed]]
    assert iterations == sorted(set(iterations)) and iterations[-1] >= 2, iterations
    assert len(outcome.table) == 6 and all(r["status"] != "error" for r in outcome.table)

    model, meta = checkpoint.load_model(outcome.best_dir)
    splits = load_dataset("fashion-mnist", subset=600, val_fraction=0.1)
    _, test_acc = evaluate(model, splits.test, splits.info, 1000)
    assert test_acc == pytest.approx(meta.metrics["test_acc"], abs=1e-6)
    assert meta.metrics["test_images"] == 10000
    assert meta.extra["space"] == "tiny" and "lr" in meta.extra["params"]
    assert (outcome.best_dir / "search_space.yaml").is_file()
    assert math.isfinite(meta.metrics["val_acc"])
    study = optuna.load_study(
        study_name="e2e", storage=f"sqlite:///{outcome.experiment_dir / 'optuna.db'}"
    )
    assert len(study.trials) == 6


@pytest.mark.slow
@needs_fmnist
def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE.replace("num_samples: 6", "num_samples: 4"))
    args = search_command(space, tmp_path, "--scheduler", "fifo", "--max-concurrent", "1")
    kill_driver_then_resume(args, tmp_path / "exp", epochs=3)
    assert len(trial_results(tmp_path / "exp")) == 4
