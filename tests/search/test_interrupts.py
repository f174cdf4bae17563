"""A search stopped from outside: Ctrl-C and SIGTERM mid-trial, what they leave, and --resume
(here, and from a snapshot on another machine)."""

import json
import signal

import optuna
import pytest
from search_support import (
    QUICK_EPOCHS,
    needs_fmnist,
    quick_args,
    run_driver,
    signal_mid_trial,
    trial_results,
)

from ecab_tune import experiment
from ecab_tune.search.space import SPACES_DIR


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
    own = tmp_path / "mine.yaml"  # the quick space as a user's file, gone on the next machine
    own.write_text((SPACES_DIR / "quick.yaml").read_text())
    args = quick_args(tmp_path, "--export-partial", "--snapshot", str(snap), space=own)
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

    # Another machine: nothing but the snapshot, under another storage folder. The first
    # folder is moved away: anything written to its path would make it again.
    exp.rename(tmp_path / "first")
    own.unlink()
    elsewhere = tmp_path / "elsewhere"
    resumed = [*quick_args(elsewhere, "--snapshot", str(snap), space=own), "--resume"]
    code = run_driver(resumed, tmp_path / "resumed.log")
    lines = (tmp_path / "resumed.log").read_text().splitlines()
    assert code == 0, "\n".join(lines[-30:])
    assert f"[search] restored {elsewhere / 'exp'} from the snapshot {snap}" in lines
    assert not exp.exists()
    assert best_params(elsewhere / "exp") == best_params(quick_search[0])
    # Every trial's every epoch reached the study that moved with it, and nothing else did.
    study = optuna.load_study(
        study_name="exp", storage=f"sqlite:///{elsewhere / 'exp' / 'optuna.db'}"
    )
    epochs = {t.user_attrs["trial_id"]: t.user_attrs.get("epochs") for t in study.trials}
    assert epochs == {
        t["trial_id"]: t["epochs"]
        for t in json.loads((elsewhere / "exp" / "summary.json").read_text())["trials"]
    }
