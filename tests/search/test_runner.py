"""Real Ray Tune searches end to end: ASHA, a crashed trial recovered, the export, and a
killed driver resumed without re-running finished trials."""

import math
import os

import optuna
import pytest
from search_support import (
    SPACE,
    kill_driver_then_resume,
    needs_fmnist,
    search_command,
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
