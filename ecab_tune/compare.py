"""`python -m ecab_tune.compare`: does bridge attention beat SE, CBAM and ECA on equal budgets?

Every (variant, seed) pair is one job with the same recipe, data and seeds, run in parallel
through Ray; the output folder gets the raw numbers, a Markdown table with paired confidence
intervals against `none`, and three plots.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ecab_tune import checkpoint, plots
from ecab_tune.cluster import ClusterJoinError, check_resources, start_ray
from ecab_tune.config import DataConfig, TrainConfig, add_arguments, from_args
from ecab_tune.data import DataInfo, DatasetNotFoundError, Splits, preprocess
from ecab_tune.engine import resolve_device
from ecab_tune.models import ModelConfig, capture_attention, list_attentions, list_models
from ecab_tune.profile import count_macs, latency_ms
from ecab_tune.stats import mean_std, paired_ci
from ecab_tune.train import load_data, make_trainer, parse_kwargs, run_metrics

VARIANTS = ("none", "se", "cbam", "eca", "bridge", "ecab")
BASELINE = "none"
DATA_SEED = 0  # one subset/validation draw shared by every job: seeds vary init and order only
ATTENTION_IMAGES = 8  # the first test images, the same for every run
RESULTS, TABLE = "results.json", "table.md"


@dataclass(frozen=True)
class CompareConfig:
    """One study: each variant × seed trained on the same data with the same recipe."""

    model: str
    variants: tuple[str, ...]
    seeds: int
    width: float
    ecab: dict[str, Any]  # options of the `ecab` variant only
    data: DataConfig
    train: TrainConfig  # every job's recipe; its seed is replaced by the job's
    address: str | None  # None: embedded Ray
    cpus_per_job: float
    gpus_per_job: float
    out: Path

    def __post_init__(self) -> None:
        check_resources(self.cpus_per_job, self.gpus_per_job)
        if self.seeds < 1:
            raise ValueError(f"--seeds={self.seeds} must be >= 1")
        repeated = sorted({v for v in self.variants if self.variants.count(v) > 1})
        if repeated:
            raise ValueError(f"--variants lists {', '.join(repeated)} more than once")
        if self.ecab and "ecab" not in self.variants:
            raise ValueError("--ecab/--ecab-from set options of `ecab`, which --variants omits")

    def model_config(self, variant: str, info: DataInfo) -> ModelConfig:
        return ModelConfig(
            self.model,
            variant,
            dict(self.ecab) if variant == "ecab" else {},
            self.width,
            num_classes=len(info.classes),
            in_chans=info.channels,
        )


@dataclass(frozen=True)
class RunResult:
    """Everything one (variant, seed) job measured; `results.json` holds a list of these."""

    variant: str
    seed: int
    status: str
    test_acc: float
    test_loss: float
    params: int
    macs: int
    train_images_per_s: float  # mean over epochs
    latency_ms: float  # median batch-1 forward
    seconds: float
    val_acc: tuple[float, ...]  # after each epoch
    attention: dict[str, list[list[float]]]  # module → channel weights, images × channels


def channel_weights(
    model: nn.Module, images: Tensor, info: DataInfo
) -> dict[str, list[list[float]]]:
    """Per attention module, its channel gate (images × channels) for the uint8 `images`."""
    model.eval()
    with torch.inference_mode(), capture_attention(model) as captured:
        model(preprocess(images, info))
    return {
        name: kinds["channel"].float().cpu().tolist()
        for name, kinds in captured.items()
        if "channel" in kinds
    }


def run_job(
    model_cfg: ModelConfig, train_cfg: TrainConfig, data: Splits, threads: int
) -> RunResult:
    """Train one variant with one seed and measure it; the body of each Ray task."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    trainer = make_trainer(model_cfg, data, train_cfg, resolve_device("auto"))
    fit = trainer.fit()
    metrics = run_metrics(trainer, fit)
    info = data.info
    shape = (info.channels, info.height, info.width)
    return RunResult(
        variant=model_cfg.attention,
        seed=train_cfg.seed,
        status=fit.status,
        test_acc=metrics["test_acc"],
        test_loss=metrics["test_loss"],
        params=metrics["params"],
        macs=count_macs(trainer.model, shape),
        train_images_per_s=statistics.fmean(e.images_per_s for e in fit.history),
        latency_ms=latency_ms(trainer.model, shape),
        seconds=time.perf_counter() - start,
        val_acc=tuple(e.val_acc for e in fit.history),
        attention=channel_weights(
            trainer.model, trainer.splits.test.images[:ATTENTION_IMAGES], info
        ),
    )


def run_jobs(cfg: CompareConfig, models: dict[str, ModelConfig], data: Splits) -> list[RunResult]:
    """All jobs as Ray tasks sharing one copy of the data; a line as each finishes."""
    import ray

    start_ray(cfg.address, dashboard=False, tag="compare")
    available = ray.cluster_resources()
    for flag, key, need in (
        ("--cpus-per-trial", "CPU", cfg.cpus_per_job),
        ("--gpus-per-trial", "GPU", cfg.gpus_per_job),
    ):
        if need > available.get(key, 0):  # the task could never be scheduled: fail, don't hang
            raise ValueError(f"{flag}={need} but the Ray cluster has {available.get(key, 0)} {key}")
    task = ray.remote(num_cpus=cfg.cpus_per_job, num_gpus=cfg.gpus_per_job)(run_job)
    shared = ray.put(data)
    threads = max(1, int(cfg.cpus_per_job))
    # Seed-major order: whatever has finished first is already paired across variants.
    pending = [
        task.remote(models[v], dataclasses.replace(cfg.train, seed=s), shared, threads)
        for s in range(cfg.seeds)
        for v in cfg.variants
    ]
    results = []
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        run: RunResult = ray.get(done[0])
        results.append(run)
        print(
            f"[compare] {run.variant:<8} seed {run.seed}: test_acc {run.test_acc:.2%}  "
            f"{run.seconds:.0f}s  {run.status}  ({len(pending)} left)",
            flush=True,
        )
    return sorted(results, key=lambda r: (cfg.variants.index(r.variant), r.seed))


def by_variant(runs: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    grouped: dict[str, list[RunResult]] = defaultdict(list)
    for run in runs:
        grouped[run.variant].append(run)
    return dict(grouped)


def _pp(x: float) -> str:
    return f"{100 * x:+.2f}"


def format_table(runs: Sequence[RunResult]) -> str:
    """Markdown: per variant mean ± std accuracy, costs, and the paired difference to `none`."""
    groups = by_variant(runs)
    seeds = max(len(g) for g in groups.values())
    base = {r.seed: r.test_acc for r in groups.get(BASELINE, [])}
    lines = [
        f"| variant | test acc % (n={seeds}) | Δ vs {BASELINE}, pp [95% CI] | CI excludes 0 "
        "| params | MACs | train img/s | latency ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sources = set()
    for variant, group in groups.items():
        mean, std = mean_std([r.test_acc for r in group])
        acc = f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if seeds > 1 else "")
        paired = [r for r in group if r.seed in base]
        if variant == BASELINE or not paired:
            delta, excludes = "—", "—"
        else:
            ci = paired_ci([r.test_acc for r in paired], [base[r.seed] for r in paired])
            if ci is None:
                delta, excludes = f"{_pp(paired[0].test_acc - base[paired[0].seed])} [n/a]", "n/a"
            else:
                sources.add(ci.t_source)
                delta = f"{_pp(ci.mean)} [{_pp(ci.low)}, {_pp(ci.high)}]"
                excludes = "yes" if ci.excludes_zero else "no"
        speed = statistics.fmean(r.train_images_per_s for r in group)
        latency = statistics.fmean(r.latency_ms for r in group)
        lines.append(
            f"| {variant} | {acc} | {delta} | {excludes} | {group[0].params:,} "
            f"| {group[0].macs / 1e6:.2f}M | {speed:,.0f} | {latency:.2f} |"
        )
    lines += ["", *_notes(runs, groups, seeds, sources)]
    return "\n".join(lines) + "\n"


def _notes(
    runs: Sequence[RunResult], groups: dict[str, list[RunResult]], seeds: int, sources: set[str]
) -> list[str]:
    notes = []
    if BASELINE not in groups:
        notes.append(f"No Δ: add `{BASELINE}` to --variants to compare against no attention.")
    elif seeds < 2:
        notes.append("One seed: no confidence interval can be given (run --seeds 2 or more).")
    else:
        how = "scipy.stats" if sources == {"scipy"} else "a t table (scipy is not installed)"
        notes.append(
            f"Δ: mean over seeds of the paired difference (same seed: same data order and "
            f"initialisation seed); 95% CI from a paired t-test, t quantile from {how}."
        )
    notes.append(
        "MACs: convolutions and linear layers for one image; latency: median batch-1 forward."
    )
    failed = [f"{r.variant} seed {r.seed} ({r.status})" for r in runs if r.status != "completed"]
    if failed:
        notes.append(f"Runs that did not complete (included as they ended): {', '.join(failed)}.")
    return notes


def write_plots(runs: Sequence[RunResult], out: Path) -> list[Path]:
    groups = by_variant(runs)
    points, curves, weights = {}, {}, {}
    for variant, group in groups.items():
        mean, std = mean_std([r.test_acc for r in group])
        points[variant] = (group[0].params, mean, std)
        # A diverged run ends early: each epoch averages the runs that reached it.
        curves[variant] = [
            statistics.fmean(r.val_acc[e] for r in group if len(r.val_acc) > e)
            for e in range(max(len(r.val_acc) for r in group))
        ]
        stages: dict[str, list[float]] = defaultdict(list)
        for run in group:
            for module, per_image in run.attention.items():
                stages[module.split(".")[0]].extend(w for image in per_image for w in image)
        weights[variant] = dict(stages)
    return [
        plots.accuracy_vs_params(points, out / "accuracy_vs_params.png"),
        plots.learning_curves(curves, out / "learning_curves.png"),
        plots.attention_weights(weights, out / "attention_weights.png"),
    ]


def write_outputs(cfg: CompareConfig, info: DataInfo, runs: Sequence[RunResult]) -> str:
    """`results.json`, `table.md` and the plots in `cfg.out`; returns the table."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    raw = {
        # `ray` says where the jobs ran, not what they were: it is left out.
        "study": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "ray"},
        "data": info.to_dict(),
        "models": {v: cfg.model_config(v, info).to_dict() for v in cfg.variants},
        "runs": [dataclasses.asdict(r) for r in runs],
    }
    (cfg.out / RESULTS).write_text(json.dumps(raw, indent=1, default=str))
    table = format_table(runs)
    (cfg.out / TABLE).write_text(table)
    write_plots(runs, cfg.out)
    return table


def _option(item: str) -> dict[str, Any]:
    try:
        return parse_kwargs([item])
    except ValueError:  # argparse names the flag itself ("argument --ecab: ...")
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ecab_tune.compare",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n  python -m ecab_tune.compare --model resnet20 --seeds 3 --epochs 30 "
        "--ecab-from runs/bridge-search/best",
    )
    study = parser.add_argument_group("study")
    study.add_argument("--model", default="resnet20", choices=list_models(), help="architecture")
    study.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    study.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list_attentions(),
        help="attention variants to compare (default: %(default)s)",
    )
    study.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per variant")
    study.add_argument("--epochs", type=int, default=10, help="epochs of every job")
    study.add_argument(
        "--ecab",
        action="append",
        type=_option,
        default=[],
        metavar="KEY=VALUE",
        help="option of the ecab variant, repeatable (e.g. fusion=concat); overrides --ecab-from",
    )
    study.add_argument(
        "--ecab-from",
        metavar="CHECKPOINT",
        help="take the ecab options from a checkpoint's meta.json (e.g. runs/<search>/best)",
    )
    study.add_argument("--out", help="output folder (default: runs/compare/<model>-<time>)")
    add_arguments(parser, DataConfig)
    add_arguments(parser, TrainConfig, skip=("epochs", "seed"))
    ray = parser.add_argument_group("ray")
    ray.add_argument("--address", help="omit: embedded local Ray; 'auto' or ray://host:10001")
    ray.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs reserved per job")
    ray.add_argument(
        "--gpus-per-trial", type=float, default=0.0, help="GPUs per job (fractions share)"
    )
    return parser


def ecab_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.ecab_from:
        model = checkpoint.read_meta(args.ecab_from).model
        if model.attention != "ecab":
            raise ValueError(
                f"--ecab-from {args.ecab_from}: its model uses {model.attention!r}, not ecab"
            )
        options.update(model.attention_kwargs)
    for item in args.ecab:
        options.update(item)
    return options


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    out = Path(args.out or f"runs/compare/{args.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    if (out / RESULTS).exists():
        raise ValueError(f"{out} already holds a study: choose a new --out")
    return CompareConfig(
        model=args.model,
        variants=tuple(args.variants),
        seeds=args.seeds,
        width=args.width,
        ecab=ecab_options(args),
        data=from_args(DataConfig, args),
        train=from_args(TrainConfig, args),
        address=args.address,
        cpus_per_job=args.cpus_per_trial,
        gpus_per_job=args.gpus_per_trial,
        out=out,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        data = load_data(cfg.data, DATA_SEED)
        models = {v: cfg.model_config(v, data.info) for v in cfg.variants}
        for model_cfg in models.values():
            model_cfg.build()  # every option error surfaces now, not in a Ray worker later
        print(
            f"[compare] {len(cfg.variants)} variants × {cfg.seeds} seeds of {cfg.model} "
            f"(width {cfg.width}), {cfg.train.epochs} epochs each, on {cfg.data.dataset} "
            f"({len(data.train)} train, {len(data.val) if data.val else 0} val, "
            f"{len(data.test)} test) -> {cfg.out}",
            flush=True,
        )
        runs = run_jobs(cfg, models, data)
    except ClusterJoinError as exc:  # one line, without the usage a flag error gets
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, DatasetNotFoundError) as exc:
        parser.error(str(exc))
    table = write_outputs(cfg, data.info, runs)
    print("\n" + table + f"\n[compare] results, table and plots in {cfg.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
