"""The search as Ray Tune configuration, assembled in one place: trainable, resources, Optuna
searcher, ASHA, storage, failure handling, trackers, and how Ray talks while it runs.

Ray and Optuna are imported where used, so a flag error never waits for them.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ecab_tune.data import Splits
from ecab_tune.experiment import MLFLOW_ARTIFACTS, MLFLOW_DB, OPTUNA_DB, TRIAL_PREFIX
from ecab_tune.search.config import SearchConfig
from ecab_tune.search.space import SearchSpace


def make_sampler(cfg: SearchConfig, space: SearchSpace) -> Any:
    import optuna

    if cfg.searcher == "grid":
        from ecab_tune.search.patches import TuneGridSampler  # imports Ray

        return TuneGridSampler(space.grid(), seed=cfg.seed)
    if cfg.searcher == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    # constant_liar: parallel trials don't all get the same suggestion while others run.
    # group: a define-by-run space's conditional parameters form groups a joint model needs.
    return optuna.samplers.TPESampler(
        seed=cfg.seed,
        n_startup_trials=min(10, max(2, cfg.num_samples // 3)),
        constant_liar=True,
        multivariate=cfg.multivariate,
        group=cfg.multivariate,
    )


def build_tuner(
    cfg: SearchConfig,
    space: SearchSpace,
    splits: Splits,
    trainable: Callable[..., None] | None = None,
    callbacks: list[Any] | None = None,
) -> Any:
    """The whole search as Tune configuration, assembled in one place."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from ecab_tune.search.patches import (
        BudgetAwareOptunaSearch,
        CsvLogger,
        JsonLogger,
        ResumableASHA,
        restore_tuner,
    )
    from ecab_tune.search.trainable import TrialSpec, run_trial

    exp_dir = cfg.experiment_dir
    spec = TrialSpec(space, int(cfg.max_epochs), cfg.seed, str(exp_dir), cfg.verbose)
    resources = {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
    fn = tune.with_resources(
        tune.with_parameters(trainable or run_trial, spec=spec, data=splits), resources
    )
    # Ours replace Tune's default result.json/progress.csv loggers (patches.py, 6.).
    run_callbacks = [*(callbacks or []), *tracker_callbacks(cfg), JsonLogger(), CsvLogger()]
    if cfg.resume:
        return restore_tuner(exp_dir, fn, run_callbacks)
    exp_dir.mkdir(parents=True, exist_ok=True)
    objectives = cfg.objective_list
    metric, mode = cfg.primary.metric, cfg.primary.mode
    storage = optuna.storages.RDBStorage(f"sqlite:///{exp_dir / OPTUNA_DB}")
    if cfg.warm_start is not None:
        from ecab_tune.search.warm_start import seed_study

        seeded = seed_study(
            Path(cfg.warm_start), storage, str(cfg.name), space, objectives, int(cfg.max_epochs),
            enqueue_top=max(1, int(cfg.num_samples) // 4),
        )  # fmt: skip
        print(f"[search] warm start from {cfg.warm_start}: {seeded}", flush=True)
    # Tune only hands metric/mode to a searcher built without a space; ours has one. Several
    # objectives make it multi-objective; Tune's own metric (ASHA, checkpoints) is the first.
    searcher = BudgetAwareOptunaSearch(
        space=space.sample,
        metric=[o.metric for o in objectives] if len(objectives) > 1 else metric,
        mode=[o.mode for o in objectives] if len(objectives) > 1 else mode,
        sampler=make_sampler(cfg, space),
        study_name=cfg.name,
        storage=storage,
        max_epochs=int(cfg.max_epochs),
        stopped_as_pruned=cfg.stopped_trials == "pruned",
        experiment_dir=exp_dir,
    )
    scheduler = (
        ResumableASHA(
            experiment_dir=exp_dir,
            max_t=int(cfg.max_epochs),
            grace_period=min(space.scheduler.grace_period, int(cfg.max_epochs)),
            reduction_factor=space.scheduler.reduction_factor,
        )
        if cfg.scheduler == "asha"
        else FIFOScheduler()
    )
    return tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=int(cfg.num_samples),
            max_concurrent_trials=cfg.max_concurrent,
            trial_dirname_creator=lambda trial: f"{TRIAL_PREFIX}{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=cfg.name,
            storage_path=str(exp_dir.parent),
            # A crashed trial restarts from its last checkpoint, twice at most.
            failure_config=tune.FailureConfig(max_failures=2),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=metric, checkpoint_score_order=mode
            ),
            callbacks=run_callbacks,
            # Our progress lines replace Ray's tables and result boxes unless asked for.
            verbose=1 if cfg.verbose else 0,
        ),
    )


TRACKER_MODULES = {"tensorboard": "tensorboardX", "mlflow": "mlflow"}


def check_tracker(tracker: str) -> None:
    """Before any data loads: the tracker's package is installed (the `trackers` extra)."""
    try:
        importlib.import_module(TRACKER_MODULES[tracker])
    except ImportError as exc:
        raise ValueError(
            f"--tracker {tracker} needs {TRACKER_MODULES[tracker]}: "
            "pip install 'ecab_tune[trackers]'"
        ) from exc


def tracker_callbacks(cfg: SearchConfig) -> list[Any]:
    """Ray Tune's logger callback for --tracker; each writes inside the experiment folder."""
    if cfg.tracker == "tensorboard":
        from ray.tune.logger import TBXLoggerCallback

        return [TBXLoggerCallback()]  # event files in every trial folder
    if cfg.tracker == "mlflow":
        from mlflow.tracking import MlflowClient
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        # A SQLite store in the experiment (MLflow 3 refuses its plain-file store), and the
        # experiment made here so that its artifact folder is inside ours too, not in the cwd.
        uri = f"sqlite:///{cfg.experiment_dir / MLFLOW_DB}"
        client = MlflowClient(tracking_uri=uri)
        if client.get_experiment_by_name(str(cfg.name)) is None:
            artifacts = (cfg.experiment_dir / MLFLOW_ARTIFACTS).as_uri()
            client.create_experiment(str(cfg.name), artifact_location=artifacts)
        return [
            MLflowLoggerCallback(
                tracking_uri=uri,
                experiment_name=str(cfg.name),
                save_artifact=False,  # the checkpoints already live in the trial folders
            )
        ]
    return []


class _DropRayResumeHints(logging.Filter):
    """Ray's own hints after an interruption name `Tuner.restore(...)`; we print our command."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "Tuner.restore(" not in message and "Trials did not complete" not in message


# Tune's switches for the length of a search, unless the environment sets them: an experiment
# snapshot every 5 s loses little state if the driver is killed ... which Tune would otherwise
# warn about, every time, as a possible bottleneck.
TUNE_ENV = {
    "TUNE_GLOBAL_CHECKPOINT_S": "5",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}


@contextlib.contextmanager
def tune_settings(verbose: bool) -> Iterator[None]:
    """For the length of a search, however it was started (`python -m`, `ecab-search`, a
    library call): Tune's switches (TUNE_ENV), Ray's restore hints dropped (we print our
    command), and unless `verbose` Ray's and Optuna's own progress output quiet (our lines
    replace it)."""
    import optuna

    env = {k: v for k, v in TUNE_ENV.items() if k not in os.environ}
    if not verbose:
        # Ray's newer output engine prints its experiment box even when silent; the older one
        # prints nothing at verbose=0 (RAY_AIR_NEW_OUTPUT is Ray's documented switch).
        env["RAY_AIR_NEW_OUTPUT"] = "0"
    saved_env = {k: os.environ.get(k) for k in env}
    ray_tune_log = logging.getLogger("ray.tune.tune")
    hints = _DropRayResumeHints()
    ray_tune_log.addFilter(hints)
    ray_tune_level = ray_tune_log.level
    optuna_verbosity = optuna.logging.get_verbosity()
    os.environ.update(env)
    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        ray_tune_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        ray_tune_log.removeFilter(hints)
        ray_tune_log.setLevel(ray_tune_level)
        optuna.logging.set_verbosity(optuna_verbosity)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
