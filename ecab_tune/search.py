"""`python -m ecab_tune.search`: Ray Tune + Optuna (TPE) + ASHA over a YAML search space.

Runs on an embedded local Ray (laptop) or joins a cluster (`--address`). At the end it prints
the best trials and exports the best one as a self-contained checkpoint (`<storage>/<name>/best`)
that `python -m serve` loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ecab_tune import checkpoint
from ecab_tune.cluster import ClusterJoinError, check_resources, start_ray
from ecab_tune.config import DataConfig, add_arguments, from_args, to_dict
from ecab_tune.data import DatasetNotFoundError, Splits
from ecab_tune.engine import evaluate
from ecab_tune.layout import EXPORT_DIR, OPTUNA_DB, SPACE_COPY, SUMMARY_FILE, TRIAL_PREFIX
from ecab_tune.space import SearchSpace, SpaceError, load_space
from ecab_tune.train import load_data


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
        default=0.1, metadata=_help("held-out share of train for the metric")
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

    def __post_init__(self) -> None:
        for key in ("subset", "num_samples", "max_epochs", "max_concurrent"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"--{key.replace('_', '-')}={value} must be >= 1")
        check_resources(self.cpus_per_trial, self.gpus_per_trial)
        if self.resume and not self.name:
            raise ValueError("--resume needs --name of the experiment to continue")
        if self.name is not None and (not self.name or "/" in self.name):
            raise ValueError(f"--name={self.name!r} must be a plain folder name")

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
        )

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


@dataclass
class Outcome:
    experiment_dir: Path
    best_dir: Path
    best: dict[str, Any]
    table: list[dict[str, Any]]


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
    spec = TrialSpec(space, int(cfg.max_epochs), cfg.seed, str(exp_dir), crash_after_epoch)
    resources = {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
    fn = tune.with_resources(
        tune.with_parameters(trainable or run_trial, spec=spec, data=splits), resources
    )
    if cfg.resume:
        return tune.Tuner.restore(
            str(exp_dir), trainable=fn, resume_unfinished=True, resume_errored=True
        )
    exp_dir.mkdir(parents=True, exist_ok=True)
    metric, mode = space.defaults.metric, space.defaults.mode
    # Tune only hands metric/mode to a searcher built without a space; ours has one.
    searcher = BudgetAwareOptunaSearch(
        space=space.sample,
        metric=metric,
        mode=mode,
        sampler=make_sampler(cfg, space),
        study_name=cfg.name,
        storage=optuna.storages.RDBStorage(f"sqlite:///{exp_dir / OPTUNA_DB}"),
        max_epochs=int(cfg.max_epochs),
        stopped_as_pruned=cfg.stopped_trials == "pruned",
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
            callbacks=callbacks,
            verbose=1,
        ),
    )


def summarize(grid: Any, metric: str, mode: str) -> list[dict[str, Any]]:
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
                "trial_id": last.get("trial_id", "?"),
                metric: pick(values) if values else float("nan"),
                "epochs": last.get("training_iteration", 0),
                "time_s": last.get("time_total_s", 0.0),
                "status": "error"
                if result.error
                else ("diverged" if last.get("diverged") else "done"),
                "params": dict(result.config or {}),
            }
        )
    key = (lambda r: -r[metric]) if mode == "max" else (lambda r: r[metric])
    return sorted(
        rows, key=lambda r: (math.isnan(r[metric]), key(r) if not math.isnan(r[metric]) else 0)
    )


def format_table(rows: list[dict[str, Any]], metric: str, limit: int = 10) -> str:
    lines = [f"{'trial':<12} {metric:>8} {'epochs':>6} {'time':>7}  {'status':<8} params"]
    for row in rows[:limit]:
        params = ", ".join(f"{k}={_short(v)}" for k, v in row["params"].items())
        lines.append(
            f"{row['trial_id']:<12} {row[metric]:>8.4f} {row['epochs']:>6} "
            f"{row['time_s']:>6.0f}s  {row['status']:<8} {params}"
        )
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def export_best(grid: Any, cfg: SearchConfig, space: SearchSpace, splits: Splits) -> Path:
    """Copy the best trial's best checkpoint out as a self-contained, servable folder."""
    metric, mode = space.defaults.metric, space.defaults.mode
    best = grid.get_best_result(metric, mode, scope="all", filter_nan_and_inf=True)
    chosen = best.get_best_checkpoint(metric, mode) or best.checkpoint
    if chosen is None:
        raise RuntimeError("no trial produced a checkpoint; nothing to export")
    with chosen.as_directory() as folder:
        model, meta = checkpoint.load_model(folder)
    val_loss, val_acc = evaluate(model, splits.val or splits.test, splits.info, 1024)
    test_loss, test_acc = evaluate(model, splits.test, splits.info, 1024)
    metrics = {
        "val_acc": val_acc,
        "val_loss": val_loss,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "epochs": meta.metrics.get("epoch"),
        "trial_id": best.metrics.get("trial_id"),
        "num_params": sum(p.numel() for p in model.parameters()),
        "test_images": len(splits.test),
    }
    extra = {"search": to_dict(cfg), "space": space.name, "params": dict(best.config)}
    out = cfg.experiment_dir / EXPORT_DIR
    shutil.rmtree(out, ignore_errors=True)
    checkpoint.save(out, model, dataclasses.replace(meta, metrics=metrics, extra=extra))
    shutil.copyfile(space.path, out / SPACE_COPY)
    return out


def run_search(
    cfg: SearchConfig,
    *,
    trainable: Callable[..., None] | None = None,
    crash_after_epoch: int | None = None,
    callbacks: list[Any] | None = None,
) -> Outcome:
    space = load_space(cfg.space)
    cfg = cfg.resolved(space)
    exp_dir = cfg.experiment_dir
    if cfg.resume and not (exp_dir / "tuner.pkl").is_file():
        raise ValueError(f"--resume: no experiment to continue at {exp_dir}")
    if not cfg.resume and exp_dir.exists():
        raise ValueError(f"{exp_dir} exists: pass --resume to continue it or choose a new --name")
    splits = load_data(cfg.data_config(), cfg.seed)
    print(
        f"[search] space {space.name!r}: {cfg.num_samples} trials x <= {cfg.max_epochs} epochs, "
        f"{cfg.searcher} + {cfg.scheduler} on {cfg.dataset} ({len(splits.train)} train, "
        f"{len(splits.val) if splits.val else 0} val, {len(splits.test)} test)",
        flush=True,
    )
    print(f"[search] experiment folder: {exp_dir}", flush=True)
    start_ray(cfg.address, cfg.dashboard, "search")
    grid = build_tuner(cfg, space, splits, trainable, crash_after_epoch, callbacks).fit()
    metric, mode = space.defaults.metric, space.defaults.mode
    table = summarize(grid, metric, mode)
    print("\n[search] best trials:\n" + format_table(table, metric), flush=True)
    best_dir = export_best(grid, cfg, space, splits)
    best = checkpoint.read_meta(best_dir).metrics
    (exp_dir / SUMMARY_FILE).write_text(
        json.dumps({"best": best, "trials": table, "search": to_dict(cfg)}, indent=2, default=str)
    )
    print(
        f"[search] best model: val_acc {best['val_acc']:.2%}, test_acc {best['test_acc']:.2%} "
        f"on {best['test_images']} test images -> {best_dir}",
        flush=True,
    )
    return Outcome(exp_dir, best_dir, best, table)


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
    return 0 if outcome.best_dir.is_dir() else 1


if __name__ == "__main__":
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")  # lose little state if killed
    sys.exit(main())
