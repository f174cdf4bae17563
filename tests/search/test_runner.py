import json
import math
import os
import signal

import optuna
import pytest
from search_support import (
    QUICK_EPOCHS,
    SPACE,
    kill_driver_then_resume,
    needs_fmnist,
    quick_args,
    run_driver,
    search_command,
    signal_mid_trial,
    trial_results,
)

from ecab_tune import checkpoint, experiment
from ecab_tune.config import DataConfig
from ecab_tune.data import load_dataset
from ecab_tune.engine import evaluate
from ecab_tune.search import SearchConfig, run_search


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
        data=DataConfig(subset=600),
        max_concurrent=2,
        dashboard=False,
    )
    marker = tmp_path / "crashed"

    def crash_once(config, *, spec, data):
        """The real trial, but the first save after epoch 1 (of any trial) dies, once: the trial
        must come back from its epoch-1 checkpoint."""
        from ray import tune

        from ecab_tune.search import trainable

        save = trainable.save_trainer

        def save_or_crash(folder, trainer, *args, **kwargs):
            if trainer.epoch == 2:
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass
                else:
                    os.write(fd, tune.get_context().get_trial_id().encode())
                    os.close(fd)
                    raise RuntimeError("injected crash")
            return save(folder, trainer, *args, **kwargs)

        trainable.save_trainer = save_or_crash  # in this trial's worker process only
        trainable.run_trial(config, spec=spec, data=data)

    outcome = run_search(cfg, trainable=crash_once)

    results = trial_results(outcome.experiment_dir)
    assert len(results) == 6
    epochs = {tid: rows[-1]["training_iteration"] for tid, rows in results.items()}
    assert min(epochs.values()) < 3 < max(epochs.values()) + 1, epochs  # ASHA stopped some

    crashed = marker.read_text()
    iterations = [row["training_iteration"] for row in results[crashed]]
    assert iterations == sorted(set(iterations)) and iterations[-1] >= 2, iterations
    assert len(outcome.table) == 6 and all(r.status != "error" for r in outcome.table)

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
    assert {r.status for r in outcome.table} <= {experiment.FINISHED, experiment.STOPPED}


@pytest.mark.slow
@needs_fmnist
def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE.replace("num_samples: 6", "num_samples: 4"))
    args = search_command(space, tmp_path, "--scheduler", "fifo", "--max-concurrent", "1")
    kill_driver_then_resume(args, tmp_path / "exp", epochs=3)
    assert len(trial_results(tmp_path / "exp")) == 4


# ---------------------------------------------------------------- the terminal and Ctrl-C
def optuna_trials(exp):
    study = optuna.load_study(study_name="exp", storage=f"sqlite:///{exp / 'optuna.db'}")
    return study.get_trials()


def best_params(exp):
    return json.loads((exp / "best" / "meta.json").read_text())["extra"]["params"]


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
def test_default_output_is_compact(quick_search):
    _, lines = quick_search
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
def test_resume_finishes_with_the_best_trial_of_an_uninterrupted_run(interrupted, quick_search):
    exp, _, _, _, code, lines = interrupted
    assert code == 0, "\n".join(lines[-30:])
    assert best_params(exp) == best_params(quick_search[0])
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
def test_sigterm_exits_143_and_the_snapshot_resumes_on_another_machine(tmp_path, quick_search):
    exp, snap = tmp_path / "exp", tmp_path / "snapshot"
    args = quick_args(tmp_path, "--export-partial", "--snapshot", str(snap))
    code = signal_mid_trial(args, exp, tmp_path / "out.log", signal.SIGTERM, QUICK_EPOCHS)
    lines = (tmp_path / "out.log").read_text().splitlines()
    assert code == 143, "\n".join(lines[-30:])
    assert lines[-1] == (
        f"interrupted: resume with python -m ecab_tune.search --name exp --storage {tmp_path} "
        f"--snapshot {snap} --resume"
    )
    meta = json.loads((exp / "best" / "meta.json").read_text())
    assert meta["extra"]["partial"] is True
    assert meta["extra"]["status"] == experiment.INTERRUPTED

    # Every trial's results; checkpoints only of the interrupted trial and the best ended one.
    statuses = {
        t["trial_id"]: t["status"]
        for t in json.loads((snap / "summary.json").read_text())["trials"]
    }
    kept = {p.parent.name.removeprefix("trial_") for p in snap.glob("trial_*/checkpoint_*")}
    interrupted = {t for t, s in statuses.items() if s == experiment.INTERRUPTED}
    ended = {t for t, s in statuses.items() if s in experiment.ENDED}
    assert interrupted and interrupted <= kept and len(kept - interrupted) == min(len(ended), 1)
    assert {p.parent.name for p in snap.glob("trial_*/result.json")} == {
        p.parent.name for p in exp.glob("trial_*/result.json")
    }
    assert not (snap / "best").exists()

    # Another machine: nothing but the snapshot, under another storage folder.
    elsewhere = tmp_path / "elsewhere"
    resumed = [*quick_args(elsewhere, "--snapshot", str(snap)), "--resume"]
    code = run_driver(resumed, tmp_path / "resumed.log")
    lines = (tmp_path / "resumed.log").read_text().splitlines()
    assert code == 0, "\n".join(lines[-30:])
    assert f"[search] restored {elsewhere / 'exp'} from the snapshot {snap}" in lines
    assert best_params(elsewhere / "exp") == best_params(quick_search[0])
