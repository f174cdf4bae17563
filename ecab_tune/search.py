"""`python -m ecab_tune.search`: Ray Tune + Optuna (TPE) + ASHA over a YAML search space.

Runs on an embedded local Ray (laptop) or joins a cluster (`--address`). At the end it prints
the best trials and exports the best one as a self-contained checkpoint (`<storage>/<name>/best`)
that `python -m serve` loads.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import shlex
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ecab_tune import checkpoint, experiment
from ecab_tune.cluster import ClusterJoinError, check_resources, start_ray
from ecab_tune.config import DataConfig, add_arguments, from_args, to_dict
from ecab_tune.data import DatasetNotFoundError, Splits, load_data
from ecab_tune.engine import evaluate
from ecab_tune.experiment import (
    EXPORT_DIR,
    MLFLOW_ARTIFACTS,
    MLFLOW_DB,
    OPTUNA_DB,
    PARETO_DIR,
    SEARCH_FILE,
    SPACE_COPY,
    SUMMARY_FILE,
    TRIAL_PREFIX,
)
from ecab_tune.objectives import Objective, parse_objectives
from ecab_tune.reporting.model_card import write_card
from ecab_tune.space import SearchSpace, SpaceError, load_space


def _help(text: str) -> dict[str, Any]:
    return {"help": text}


@dataclass(frozen=True)
class SearchConfig:
    """One search; None means "the space file's default"."""

    space: str = field(default="bridge", metadata=_help("built-in space name or a YAML path"))
    name: str | None = field(default=None, metadata=_help("experiment name (default: space-time)"))
    storage: str = field(default="runs", metadata=_help("experiments folder (shared on a cluster)"))
    dataset: str | None = field(default=None, metadata=_help("dataset (default: the space's)"))
    data_dir: str = field(default="data", metadata=_help("folder that holds datasets"))
    download: bool = field(default=False, metadata=_help("download the dataset when absent"))
    subset: int | None = field(default=None, metadata=_help("train on N images (stratified)"))
    val_fraction: float = field(
        default=0.1, metadata=_help("held-out share of train the trials are scored on (> 0)")
    )
    num_samples: int | None = field(default=None, metadata=_help("number of trials"))
    max_epochs: int | None = field(default=None, metadata=_help("epochs of a full-budget trial"))
    cpus_per_trial: float = field(default=1.0, metadata=_help("CPUs reserved per trial"))
    gpus_per_trial: float = field(
        default=0.0, metadata=_help("GPUs per trial; fractions share a GPU (0.25: four trials)")
    )
    max_concurrent: int | None = field(default=None, metadata=_help("cap on concurrent trials"))
    scheduler: Literal["asha", "fifo"] = field(
        default="asha", metadata=_help("asha stops poor trials early; fifo runs all to the end")
    )
    searcher: Literal["optuna", "random", "grid"] | None = field(
        default=None, metadata=_help("optuna (TPE), random, or grid (choice-only spaces)")
    )
    seed: int = field(default=0, metadata=_help("seed of the sampler and of every trial"))
    address: str | None = field(
        default=None, metadata=_help("omit: embedded local Ray; 'auto' or ray://host:10001: join")
    )
    resume: bool = field(default=False, metadata=_help("continue the experiment --name"))
    dashboard: bool = field(default=True, metadata=_help("start the Ray dashboard (embedded Ray)"))
    stopped_trials: Literal["pruned", "complete"] = field(
        default="pruned",
        metadata=_help("how ASHA-stopped trials reach Optuna: pruned (budget-aware) or complete"),
    )
    progress_every: float = field(
        default=30.0, metadata=_help("seconds between status lines while the search runs")
    )
    verbose: bool = field(
        default=False, metadata=_help("also print Ray Tune's own trial tables and result boxes")
    )
    export_partial: bool = field(
        default=False,
        metadata=_help("on Ctrl-C/SIGTERM, still export the best trial so far (marked partial)"),
    )
    objectives: str | None = field(
        default=None,
        metadata=_help(
            "METRIC:max|min,... over reported metrics, e.g. val_acc:max,macs:min; the first "
            "drives ASHA and best/, two or more export the Pareto set (default: the space's metric)"
        ),
    )
    warm_start: str | None = field(
        default=None,
        metadata=_help("an earlier experiment folder whose fitting trials seed this study"),
    )
    tracker: Literal["none", "tensorboard", "mlflow"] = field(
        default="none",
        metadata=_help("also log every trial to TensorBoard or MLflow, inside the experiment"),
    )

    def __post_init__(self) -> None:
        for key in ("subset", "num_samples", "max_epochs", "max_concurrent"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"--{key.replace('_', '-')}={value} must be >= 1")
        if not 0.0 < self.val_fraction < 1.0:
            # Without a validation split the trainer would score on test: ASHA and Optuna would
            # select on it and the export would call a test score val_acc.
            raise ValueError(
                f"--val-fraction={self.val_fraction} must be in (0, 1): a search selects on "
                "a validation split, never on test"
            )
        if not self.progress_every > 0:
            raise ValueError(f"--progress-every={self.progress_every} must be > 0")
        check_resources(self.cpus_per_trial, self.gpus_per_trial)
        if self.resume and not self.name:
            raise ValueError("--resume needs --name of the experiment to continue")
        if self.name is not None and (not self.name or "/" in self.name):
            raise ValueError(f"--name={self.name!r} must be a plain folder name")
        if self.objectives is not None:
            parse_objectives(self.objectives)
        if self.warm_start is not None and self.resume:
            raise ValueError("--warm-start seeds a new study; a resumed one already has its trials")

    def resolved(self, space: SearchSpace) -> SearchConfig:
        """Fill every None from the space's defaults, so the run is fully specified."""
        d = space.defaults
        return dataclasses.replace(
            self,
            name=self.name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            dataset=self.dataset or d.dataset,
            subset=self.subset if self.subset is not None else d.subset,
            num_samples=self.num_samples or d.num_samples,
            max_epochs=self.max_epochs or d.max_epochs,
            searcher=self.searcher or d.searcher,
            objectives=self.objectives or f"{d.metric}:{d.mode}",
        )

    @property
    def objective_list(self) -> tuple[Objective, ...]:
        """The objectives, first the one ASHA and best/ go by (a resolved config's)."""
        return parse_objectives(str(self.objectives))

    @property
    def primary(self) -> Objective:
        return self.objective_list[0]

    @property
    def experiment_dir(self) -> Path:
        return Path(self.storage).resolve() / str(self.name)

    def data_config(self) -> DataConfig:
        return DataConfig(
            dataset=str(self.dataset),
            data_dir=self.data_dir,
            download=self.download,
            subset=self.subset,
            val_fraction=self.val_fraction,
        )


# What a resumed search takes from the command line; everything else is the search's own
# (its output settings too: Tune restores the progress callback and verbosity it started with).
RUNTIME_KEYS = (
    "name", "storage", "resume", "address", "dashboard", "cpus_per_trial", "gpus_per_trial",
    "max_concurrent", "export_partial",
)  # fmt: skip


def stored_config(cfg: SearchConfig) -> SearchConfig:
    """For --resume: the config the search started with, with this run's runtime flags (a
    search begun before search.json existed takes the command line's, as it did then)."""
    path = cfg.experiment_dir / SEARCH_FILE
    if not path.exists():
        return cfg
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--resume: cannot read {path} ({exc})") from exc
    names = {f.name for f in dataclasses.fields(SearchConfig)}
    kept = {k: v for k, v in stored.items() if k in names and k not in RUNTIME_KEYS}
    return dataclasses.replace(cfg, **kept)


def resume_command(cfg: SearchConfig) -> str:
    default_storage = SearchConfig.__dataclass_fields__["storage"].default
    words = ["python", "-m", "ecab_tune.search", "--name", str(cfg.name)]
    if cfg.storage != default_storage:
        words += ["--storage", cfg.storage]
    return shlex.join([*words, "--resume"])


@dataclass
class Outcome:
    experiment_dir: Path
    best_dir: Path | None  # None: interrupted and not exported
    best: dict[str, Any] | None
    table: list[dict[str, Any]]
    interrupted_by: int | None = None  # the signal that stopped the search early

    @property
    def exit_code(self) -> int:
        if self.interrupted_by is not None:
            return 128 + self.interrupted_by  # the shell's convention: 130 SIGINT, 143 SIGTERM
        return 0 if self.best_dir is not None and self.best_dir.is_dir() else 1


def make_sampler(cfg: SearchConfig, space: SearchSpace) -> Any:
    import optuna

    if cfg.searcher == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=cfg.seed)
    if cfg.searcher == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    # constant_liar: parallel trials don't all get the same suggestion while others run.
    return optuna.samplers.TPESampler(
        seed=cfg.seed, n_startup_trials=min(10, max(2, cfg.num_samples // 3)), constant_liar=True
    )


def build_tuner(
    cfg: SearchConfig,
    space: SearchSpace,
    splits: Splits,
    trainable: Callable[..., None] | None = None,
    crash_after_epoch: int | None = None,
    callbacks: list[Any] | None = None,
) -> Any:
    """The whole search as Tune configuration, assembled in one place."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from ecab_tune.trainable import TrialSpec, run_trial
    from ecab_tune.tuning import BudgetAwareOptunaSearch, ResumableASHA

    exp_dir = cfg.experiment_dir
    spec = TrialSpec(
        space, int(cfg.max_epochs), cfg.seed, str(exp_dir), crash_after_epoch, cfg.verbose
    )
    resources = {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
    fn = tune.with_resources(
        tune.with_parameters(trainable or run_trial, spec=spec, data=splits), resources
    )
    if cfg.resume:
        return tune.Tuner.restore(
            str(exp_dir), trainable=fn, resume_unfinished=True, resume_errored=True
        )
    exp_dir.mkdir(parents=True, exist_ok=True)
    objectives = cfg.objective_list
    metric, mode = cfg.primary.metric, cfg.primary.mode
    storage = optuna.storages.RDBStorage(f"sqlite:///{exp_dir / OPTUNA_DB}")
    if cfg.warm_start is not None:
        from ecab_tune.warm_start import seed_study

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
            callbacks=[*(callbacks or []), *tracker_callbacks(cfg)],
            # Our progress lines replace Ray's tables and result boxes unless asked for.
            verbose=1 if cfg.verbose else 0,
        ),
    )


TRACKER_MODULES = {"tensorboard": "tensorboardX", "mlflow": "mlflow"}


def check_tracker(tracker: str) -> None:
    """Before any data loads: the tracker's package is installed (the `trackers` extra)."""
    import importlib

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


def trial_status(result: Any, max_epochs: int) -> str:
    """A trial's status from its Ray Tune result: Tune marks the result it ended on `done`."""
    last = result.metrics or {}
    epochs = int(last.get("training_iteration", 0))
    # A trial restored after its driver was killed may end without a `done` result: one that
    # trained its whole budget has ended all the same.
    if last.get("done") or (epochs >= max_epochs and not result.error):
        return experiment.ended_status(epochs, max_epochs, diverged=bool(last.get("diverged")))
    if result.error:
        return experiment.ERRORED
    return experiment.INTERRUPTED if epochs else experiment.PENDING


def summarize(grid: Any, metric: str, mode: str, max_epochs: int) -> list[dict[str, Any]]:
    """One row per trial, best first: its best metric, epochs run, time and parameters."""
    pick = max if mode == "max" else min
    rows = []
    for result in grid:
        history = result.metrics_dataframe
        values = (
            []
            if history is None or metric not in history
            else [v for v in history[metric].tolist() if isinstance(v, float) and math.isfinite(v)]
        )
        last = result.metrics or {}
        rows.append(
            {
                "trial_id": Path(result.path).name.removeprefix(TRIAL_PREFIX),
                metric: pick(values) if values else float("nan"),
                "epochs": last.get("training_iteration", 0),
                "time_s": last.get("time_total_s", 0.0),
                "status": trial_status(result, max_epochs),
                "params": dict(result.config or {}),
            }
        )
    key = (lambda r: -r[metric]) if mode == "max" else (lambda r: r[metric])
    return sorted(
        rows, key=lambda r: (math.isnan(r[metric]), key(r) if not math.isnan(r[metric]) else 0)
    )


def tally(rows: list[dict[str, Any]], num_samples: int) -> str:
    """`2 finished, 3 stopped early, 1 pending`; trials Tune had not created yet are pending."""
    counts = Counter(r["status"] for r in rows)
    counts[experiment.PENDING] += max(0, num_samples - len(rows))
    return ", ".join(f"{counts[s]} {s}" for s in experiment.STATUSES if counts[s])


def format_table(rows: list[dict[str, Any]], metric: str, limit: int = 10) -> str:
    lines = [f"{'trial':<12} {metric:>8} {'epochs':>6} {'time':>7}  {'status':<13} params"]
    for row in rows[:limit]:
        params = ", ".join(f"{k}={_short(v)}" for k, v in row["params"].items())
        lines.append(
            f"{row['trial_id']:<12} {row[metric]:>8.4f} {row['epochs']:>6} "
            f"{row['time_s']:>6.0f}s  {row['status']:<13} {params}"
        )
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more in {SUMMARY_FILE}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def export_best(
    grid: Any,
    cfg: SearchConfig,
    space: SearchSpace,
    splits: Splits,
    table: list[dict[str, Any]],
    partial: bool = False,
) -> Path:
    """Copy the best trial's best checkpoint out as a self-contained, servable folder."""
    metric, mode = cfg.primary.metric, cfg.primary.mode
    best = grid.get_best_result(metric, mode, scope="all", filter_nan_and_inf=True)
    chosen = best.get_best_checkpoint(metric, mode) or best.checkpoint
    if chosen is None:
        raise RuntimeError("no trial produced a checkpoint; nothing to export")
    out = cfg.experiment_dir / EXPORT_DIR
    return export_trial(best, chosen, cfg, space, splits, table, out, partial=partial)


def export_trial(
    result: Any,
    chosen: Any,
    cfg: SearchConfig,
    space: SearchSpace,
    splits: Splits,
    table: list[dict[str, Any]],
    out: Path,
    *,
    partial: bool = False,
    extra_metrics: dict[str, Any] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """One trial's checkpoint `chosen`, re-scored on val and test, as a servable folder `out`."""
    with chosen.as_directory() as folder:
        model, meta = checkpoint.load_model(folder)
    val_loss, val_acc = evaluate(model, splits.val or splits.test, splits.info, 1024)
    test_loss, test_acc = evaluate(model, splits.test, splits.info, 1024)
    trial_id = Path(result.path).name.removeprefix(TRIAL_PREFIX)
    metrics = {
        "val_acc": val_acc,
        "val_loss": val_loss,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "epochs": meta.metrics.get("epoch"),
        "trial_id": trial_id,
        "num_params": sum(p.numel() for p in model.parameters()),
        "test_images": len(splits.test),
        **(extra_metrics or {}),
    }
    status = next((r["status"] for r in table if r["trial_id"] == trial_id), None)
    extra = {
        "search": to_dict(cfg),
        "space": space.name,
        "params": dict(result.config),
        "status": status,  # the trial's, in statuses' words
        "partial": partial,  # True: the search was interrupted before it finished
        **(extra_meta or {}),
    }
    shutil.rmtree(out, ignore_errors=True)
    exported = dataclasses.replace(meta, metrics=metrics, extra=extra)
    checkpoint.save(out, model, exported)
    shutil.copyfile(space.path, out / SPACE_COPY)
    write_card(out, exported)  # config.json + README.md: best/ reads as a model folder
    return out


def export_pareto(
    grid: Any,
    cfg: SearchConfig,
    space: SearchSpace,
    splits: Splits,
    table: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every Pareto-optimal full-budget trial as `pareto/<k>/` (k = 0 is the best on the first
    objective), each as servable as best/; one row per member for the summary."""
    from ecab_tune.pareto import pareto_members

    objectives = cfg.objective_list
    finished = {r["trial_id"] for r in table if r["status"] == experiment.FINISHED}
    members = pareto_members(list(grid), objectives, finished)
    root = cfg.experiment_dir / PARETO_DIR
    shutil.rmtree(root, ignore_errors=True)
    rows = []
    for k, member in enumerate(members):
        out = export_trial(
            member.result, member.checkpoint, cfg, space, splits, table, root / str(k),
            extra_metrics={m: v for m, v in member.values.items() if not m.startswith("val_")},
            extra_meta={"pareto": {"rank": k, "objectives": member.values}},
        )  # fmt: skip
        rows.append({"k": k, "trial_id": checkpoint.read_meta(out).metrics["trial_id"],
                     **member.values, "path": str(out)})  # fmt: skip
    return rows


class _DropRayResumeHints(logging.Filter):
    """Ray's own hints after an interruption name `Tuner.restore(...)`; we print our command."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "Tuner.restore(" not in message and "Trials did not complete" not in message


@contextlib.contextmanager
def quiet_ray_output(verbose: bool) -> Iterator[None]:
    """For the length of a search: Ray's restore hints are dropped (we print our command), and
    unless `verbose` Ray's and Optuna's own progress output stays quiet (our lines replace it)."""
    import optuna

    ray_tune_log = logging.getLogger("ray.tune.tune")
    hints = _DropRayResumeHints()
    ray_tune_log.addFilter(hints)
    ray_tune_level = ray_tune_log.level
    optuna_verbosity = optuna.logging.get_verbosity()
    # Ray's newer output engine prints its experiment box even when silent; the older one
    # prints nothing at verbose=0 (RAY_AIR_NEW_OUTPUT is Ray's documented switch).
    saved_env = os.environ.get("RAY_AIR_NEW_OUTPUT")
    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
        ray_tune_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        ray_tune_log.removeFilter(hints)
        ray_tune_log.setLevel(ray_tune_level)
        optuna.logging.set_verbosity(optuna_verbosity)
        if saved_env is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved_env


@contextlib.contextmanager
def sigterm_as_sigint(received: list[int]) -> Iterator[None]:
    """SIGTERM stops the search as Ctrl-C does: Tune stops its trials and saves its state on
    SIGINT. Entered after Ray starts, as `ray.init` installs a SIGTERM handler of its own."""

    def on_term(signum: int, frame: Any) -> None:
        received.append(signum)
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        # Ray's handler is native code, which Python cannot put back: the default then.
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def prepare(cfg: SearchConfig) -> tuple[SearchConfig, SearchSpace]:
    """The fully specified config and its space; a resumed search's come from its folder."""
    if cfg.resume:
        if not (cfg.experiment_dir / "tuner.pkl").is_file():
            raise ValueError(f"--resume: no experiment to continue at {cfg.experiment_dir}")
        cfg = stored_config(cfg)
    space = load_space(cfg.space)
    cfg = cfg.resolved(space)
    if not cfg.resume and cfg.experiment_dir.exists():
        raise ValueError(
            f"{cfg.experiment_dir} exists: pass --resume to continue it or choose a new --name"
        )
    if cfg.tracker != "none":
        check_tracker(cfg.tracker)
    if cfg.warm_start is not None:
        from ecab_tune.warm_start import check_compatible, load_old_trials

        old_dir = Path(cfg.warm_start).resolve()
        check_compatible(load_old_trials(old_dir)[0], space, old_dir)
        cfg = dataclasses.replace(cfg, warm_start=str(old_dir))
    return cfg, space


def run_search(
    cfg: SearchConfig,
    *,
    trainable: Callable[..., None] | None = None,
    crash_after_epoch: int | None = None,
    callbacks: list[Any] | None = None,
) -> Outcome:
    cfg, space = prepare(cfg)
    received: list[int] = []  # the stop signals, SIGTERM once it came
    with quiet_ray_output(cfg.verbose):
        try:
            return _search(cfg, space, received, trainable, crash_after_epoch, callbacks)
        except KeyboardInterrupt:
            # A second Ctrl-C, or one outside the trials (loading data, exporting).
            exp_dir = cfg.experiment_dir
            print(
                f"\ninterrupted: resume with {resume_command(cfg)}"
                if (exp_dir / "tuner.pkl").is_file()
                else "\ninterrupted before the search started: nothing to resume",
                flush=True,
            )
            return Outcome(exp_dir, None, None, [], received[0] if received else signal.SIGINT)


def _search(
    cfg: SearchConfig,
    space: SearchSpace,
    received: list[int],
    trainable: Callable[..., None] | None,
    crash_after_epoch: int | None,
    callbacks: list[Any] | None,
) -> Outcome:
    from ecab_tune.progress import SearchProgress, duration

    exp_dir = cfg.experiment_dir
    splits = load_data(cfg.data_config(), cfg.seed)
    print(
        f"[search] space {space.name!r}: {cfg.num_samples} trials x <= {cfg.max_epochs} epochs, "
        f"{cfg.searcher} + {cfg.scheduler} on {cfg.dataset} ({len(splits.train)} train, "
        f"{len(splits.val) if splits.val else 0} val, {len(splits.test)} test)",
        flush=True,
    )
    print(f"[search] experiment folder: {exp_dir}", flush=True)
    start_ray(cfg.address, cfg.dashboard, "search")
    metric, mode, max_epochs = cfg.primary.metric, cfg.primary.mode, int(cfg.max_epochs)
    progress = SearchProgress(
        metric=metric, mode=mode, max_epochs=max_epochs, every_s=cfg.progress_every
    )
    started = time.monotonic()
    with sigterm_as_sigint(received):
        tuner = build_tuner(
            cfg, space, splits, trainable, crash_after_epoch, [progress, *(callbacks or [])]
        )
        if not cfg.resume:
            stored = {**to_dict(cfg), "space": str(space.path)}
            (exp_dir / SEARCH_FILE).write_text(json.dumps(stored, indent=2))
        grid = tuner.fit()
        table = summarize(grid, metric, mode, max_epochs)
        print(
            f"\n[search] {cfg.num_samples} trials in {duration(time.monotonic() - started)}: "
            f"{tally(table, int(cfg.num_samples))}\n" + format_table(table, metric),
            flush=True,
        )
        return conclude(grid, table, cfg, space, splits, received)


def conclude(
    grid: Any,
    table: list[dict[str, Any]],
    cfg: SearchConfig,
    space: SearchSpace,
    splits: Splits,
    received: list[int],
) -> Outcome:
    """Export the best trial (an interrupted search only with --export-partial), write the
    summary, and for an interrupted search record its trials' statuses and say how to resume."""
    exp_dir = cfg.experiment_dir
    unfinished = len(table) < int(cfg.num_samples) or any(
        r["status"] in (experiment.INTERRUPTED, experiment.PENDING) for r in table
    )
    if unfinished:
        from ecab_tune.tuning import record_unfinished

        record_unfinished(
            f"sqlite:///{exp_dir / OPTUNA_DB}",
            str(cfg.name),
            {r["trial_id"]: (r["status"], r["epochs"]) for r in table},
        )
    best_dir, best = None, None
    if not unfinished or cfg.export_partial:
        try:
            best_dir = export_best(grid, cfg, space, splits, table, partial=unfinished)
        except RuntimeError as exc:
            print(f"[search] {exc}", flush=True)
    if best_dir is not None:
        best = checkpoint.read_meta(best_dir).metrics
        print(
            f"[search] {'partial ' * unfinished}best model: val_acc {best['val_acc']:.2%}, "
            f"test_acc {best['test_acc']:.2%} on {best['test_images']} test images -> {best_dir}",
            flush=True,
        )
    pareto: list[dict[str, Any]] = []
    if len(cfg.objective_list) > 1 and not unfinished:
        pareto = export_pareto(grid, cfg, space, splits, table)
        print(
            f"[search] Pareto set over {cfg.objectives}: {len(pareto)} trial(s) -> "
            f"{exp_dir / PARETO_DIR}",
            flush=True,
        )
    summary = {
        "best": best,
        "interrupted": unfinished,
        "trials": table,
        "pareto": pareto,
        "search": to_dict(cfg),
    }
    (exp_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
    if not unfinished:
        return Outcome(exp_dir, best_dir, best, table)
    print(f"interrupted: resume with {resume_command(cfg)}", flush=True)
    return Outcome(exp_dir, best_dir, best, table, received[0] if received else signal.SIGINT)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ecab_tune.search",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  python -m ecab_tune.search --space quick\n"
        "  python -m ecab_tune.search --space bridge --address auto --gpus-per-trial 0.25",
    )
    add_arguments(parser, SearchConfig)
    parser.add_argument(
        "--crash-after-epoch", type=int, default=None, help=argparse.SUPPRESS
    )  # fault injection for recovery tests
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = from_args(SearchConfig, args)
        outcome = run_search(cfg, crash_after_epoch=args.crash_after_epoch)
    except ClusterJoinError as exc:  # one line, without the usage a flag error gets
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, SpaceError, DatasetNotFoundError) as exc:
        parser.error(str(exc))
    return outcome.exit_code


if __name__ == "__main__":
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")  # lose little state if killed
    # ... which Tune would otherwise warn about, every time, as a possible bottleneck.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    sys.exit(main())
