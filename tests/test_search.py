import json
import math
import signal

import optuna
import pytest
from ray.tune.schedulers import TrialScheduler
from search_support import (
    SPACE,
    kill_driver_then_resume,
    needs_fmnist,
    run_driver,
    search_command,
    signal_mid_trial,
    trial_results,
)

from ecab_tune import checkpoint, experiment
from ecab_tune.data import load_dataset
from ecab_tune.engine import evaluate
from ecab_tune.search import SearchConfig, main, prepare, resume_command, run_search
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
        (["--gpus-per-trial", "1.5"], "a trial trains on one GPU"),
        (["--gpus-per-trial", "2"], "must be in [0, 1]"),
        (["--val-fraction", "0"], "never on test"),
        (["--scheduler", "pbt"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_flags_clearly(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


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
    # Every trial's learning curve, the crashed-then-retried one and those ASHA stopped included.
    for trial in study.trials:
        epochs = {r["training_iteration"] for r in results[trial.user_attrs["trial_id"]]}
        assert sorted(trial.intermediate_values) == sorted(epochs), trial.user_attrs
    assert {r["status"] for r in outcome.table} <= {experiment.FINISHED, experiment.STOPPED}


@pytest.mark.slow
@needs_fmnist
def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE.replace("num_samples: 6", "num_samples: 4"))
    args = search_command(space, tmp_path, "--scheduler", "fifo", "--max-concurrent", "1")
    kill_driver_then_resume(args, tmp_path / "exp", epochs=3)
    assert len(trial_results(tmp_path / "exp")) == 4


def test_the_resume_command_names_storage_only_when_it_is_not_the_default():
    assert resume_command(SearchConfig(name="q")) == "python -m ecab_tune.search --name q --resume"
    assert resume_command(SearchConfig(name="q", storage="/data/my runs")) == (
        "python -m ecab_tune.search --name q --storage '/data/my runs' --resume"
    )


def test_resume_takes_the_search_from_its_folder_and_runtime_flags_from_the_command(tmp_path):
    started = SearchConfig(space="quick", name="q", storage=str(tmp_path), subset=600, seed=3)
    exp = tmp_path / "q"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"")
    (exp / "search.json").write_text(json.dumps({**started.__dict__, "max_epochs": 2}))
    cfg, space = prepare(
        SearchConfig(name="q", storage=str(tmp_path), resume=True, export_partial=True, seed=9)
    )
    assert space.name == "quick" and (cfg.subset, cfg.seed, cfg.max_epochs) == (600, 3, 2)
    assert cfg.export_partial and cfg.resume


# ---------------------------------------------------------------- the terminal and Ctrl-C
# The quick-start's space on 600 images, 3 epochs, one trial at a time (so a SIGINT finds one
# trial mid-way and the others not started), ASHA with the space's grace period of 1.
QUICK_EPOCHS = 3


def quick_args(storage, *extra):
    return search_command(
        "quick", storage, "--num-samples", "4", "--max-epochs", str(QUICK_EPOCHS),
        "--max-concurrent", "1", *extra,
    )  # fmt: skip


def optuna_trials(exp):
    study = optuna.load_study(study_name="exp", storage=f"sqlite:///{exp / 'optuna.db'}")
    return study.get_trials()


def best_params(exp):
    return json.loads((exp / "best" / "meta.json").read_text())["extra"]["params"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The quick-start's defaults, run to the end: (experiment folder, output lines)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    code = run_driver(quick_args(root), root / "out.log")
    lines = (root / "out.log").read_text().splitlines()
    assert code == 0, "\n".join(lines[-30:])
    return root / "exp", lines


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """SIGINT mid-trial, then --resume: (experiment folder, interrupted run's exit code and
    lines, the state after the interruption, the resumed run's exit code and lines)."""
    root = tmp_path_factory.mktemp("interrupted")
    exp = root / "exp"
    args = quick_args(root, "--progress-every", "2")
    code = signal_mid_trial(args, exp, root / "out.log", signal.SIGINT, QUICK_EPOCHS)
    lines = (root / "out.log").read_text().splitlines()
    after = {
        "best": (exp / "best").exists(),
        "summary": json.loads((exp / "summary.json").read_text()),
        "optuna": {t.user_attrs.get("trial_id"): t.user_attrs for t in optuna_trials(exp)},
    }
    resumed_code = run_driver([*args, "--resume"], root / "resumed.log")
    resumed = (root / "resumed.log").read_text().splitlines()
    return exp, code, lines, after, resumed_code, resumed


@pytest.mark.slow
@needs_fmnist
def test_default_output_is_compact(uninterrupted):
    _, lines = uninterrupted
    assert len(lines) <= 60, "\n".join(lines)
    assert not any("╭" in line or "+---" in line for line in lines), "Ray's boxes are back"
    ended = [line for line in lines if line.startswith("[search] trial ")]
    assert len(ended) == 4 and all(" after " in line for line in ended), ended
    assert any(line.startswith("[search] 4 trials in ") for line in lines)


@pytest.mark.slow
@needs_fmnist
def test_ctrl_c_exits_130_with_the_resume_command_and_exports_nothing(interrupted):
    exp, code, lines, after, _, _ = interrupted
    assert code == 130, "\n".join(lines[-30:])
    command = f"python -m ecab_tune.search --name exp --storage {exp.parent} --resume"
    assert lines[-1] == f"interrupted: resume with {command}"
    assert not any("Tuner.restore" in line for line in lines)
    assert not after["best"]
    # Progress lines came while it ran, with an estimate once an epoch was done.
    assert any(line.startswith("[search] ") and "running" in line for line in lines)
    trials = after["summary"]["trials"]
    assert after["summary"]["interrupted"] and after["summary"]["best"] is None
    assert [t["status"] for t in trials] == [experiment.INTERRUPTED], trials
    assert "1 interrupted, 3 pending" in "\n".join(lines)
    # Optuna's view says the same, for the dashboard.
    (attrs,) = after["optuna"].values()
    assert attrs["status"] == experiment.INTERRUPTED and attrs["epochs"] == trials[0]["epochs"]


@pytest.mark.slow
@needs_fmnist
def test_resume_finishes_with_the_best_trial_of_an_uninterrupted_run(interrupted, uninterrupted):
    exp, _, _, _, code, lines = interrupted
    assert code == 0, "\n".join(lines[-30:])
    assert best_params(exp) == best_params(uninterrupted[0])
    summary = json.loads((exp / "summary.json").read_text())
    assert not summary["interrupted"]
    assert {t["status"] for t in summary["trials"]} <= {experiment.FINISHED, experiment.STOPPED}
    meta = json.loads((exp / "best" / "meta.json").read_text())
    assert meta["extra"]["partial"] is False and meta["extra"]["status"] == experiment.FINISHED


@pytest.mark.slow
@needs_fmnist
def test_every_epoch_reaches_optuna_once_even_across_a_resume(interrupted):
    exp = interrupted[0]
    results = trial_results(exp)
    summary = {t["trial_id"]: t for t in json.loads((exp / "summary.json").read_text())["trials"]}
    trials = optuna_trials(exp)
    assert len(trials) == len(results) == 4
    states = {t.state for t in trials}
    assert optuna.trial.TrialState.PRUNED in states, states  # ASHA stopped some
    for trial in trials:
        attrs = trial.user_attrs
        rows = results[attrs["trial_id"]]
        by_epoch = {r["training_iteration"]: r["val_acc"] for r in rows}
        # One value per epoch run; the first report of an epoch re-run after the resume stays.
        assert sorted(trial.intermediate_values) == sorted(by_epoch), attrs["trial_id"]
        assert trial.intermediate_values[1] == pytest.approx(rows[0]["val_acc"])
        assert attrs["status"] == summary[attrs["trial_id"]]["status"]
        assert attrs["epochs"] == max(by_epoch)
        assert attrs["macs"] > 0 and attrs["trial_folder"] == str(
            exp / f"trial_{attrs['trial_id']}"
        )


@pytest.mark.slow
@needs_fmnist
def test_sigterm_exits_143_and_export_partial_says_so(tmp_path):
    exp = tmp_path / "exp"
    args = quick_args(tmp_path, "--export-partial")
    code = signal_mid_trial(args, exp, tmp_path / "out.log", signal.SIGTERM, QUICK_EPOCHS)
    lines = (tmp_path / "out.log").read_text().splitlines()
    assert code == 143, "\n".join(lines[-30:])
    assert lines[-1].startswith("interrupted: resume with python -m ecab_tune.search --name exp")
    meta = json.loads((exp / "best" / "meta.json").read_text())
    assert meta["extra"]["partial"] is True
    assert meta["extra"]["status"] == experiment.INTERRUPTED
