"""Search efficiency: Optuna+ASHA vs. random+FIFO at equal trial count on the same data.

Runs real searches (embedded Ray) side by side and prints, per strategy: best validation and
test accuracy, total epochs spent, wall time, and the per-trial overhead (trial started by Tune
-> its first training step). Also runs Optuna+ASHA with ASHA-stopped trials recorded as
COMPLETE (Ray's default) to show what telling Optuna they were PRUNED buys.

    python benchmarks/search_efficiency.py --space bridge --model resnet8 --subset 6000 \
        --max-epochs 12 --num-samples 16 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass

import ray
import yaml
from ray import tune

from ecab_tune.search import SearchConfig, run_search
from ecab_tune.space import load_space, resolve_path

STRATEGIES = {
    "tpe-asha-pruned": dict(searcher="optuna", scheduler="asha", stopped_trials="pruned"),
    "tpe-asha-complete": dict(searcher="optuna", scheduler="asha", stopped_trials="complete"),
    "random-fifo": dict(searcher="random", scheduler="fifo"),
}


class TrialStarts(tune.Callback):
    """Driver-side wall clock of each trial's start, to pair with the trial's first step."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started.setdefault(trial.trial_id, time.time())


@dataclass
class Row:
    strategy: str
    seed: int
    best_val: float
    best_test: float
    epochs: int
    wall_s: float
    overhead_s: float


def space_file(args: argparse.Namespace, storage: str) -> str:
    """The space as given, or a validated copy with --model/--grace-period/--reduction-factor."""
    overrides = {
        ("defaults", "model"): args.model,
        ("scheduler", "grace_period"): args.grace_period,
        ("scheduler", "reduction_factor"): args.reduction_factor,
    }
    if all(v is None for v in overrides.values()):
        return args.space
    raw = yaml.safe_load(resolve_path(args.space).read_text())
    for (section, key), value in overrides.items():
        if value is not None:
            raw.setdefault(section, {})[key] = value
    path = f"{storage}/space.yaml"
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    load_space(path)  # fail now, not inside the first search
    return path


def run_one(strategy: str, seed: int, args: argparse.Namespace, storage: str) -> Row:
    starts = TrialStarts()
    cfg = SearchConfig(
        space=args.space_file,
        name=f"{strategy}-s{seed}",
        storage=storage,
        seed=seed,
        num_samples=args.num_samples,
        subset=args.subset,
        max_epochs=args.max_epochs,
        max_concurrent=args.max_concurrent,
        dashboard=False,
        **STRATEGIES[strategy],
    )
    start = time.perf_counter()
    outcome = run_search(cfg, callbacks=[starts])
    wall = time.perf_counter() - start
    overheads = []
    for row in outcome.table:
        first = _first_step(outcome.experiment_dir, row["trial_id"])
        if first is not None and row["trial_id"] in starts.started:
            overheads.append(first - starts.started[row["trial_id"]])
    return Row(
        strategy,
        seed,
        max(r["val_acc"] for r in outcome.table),
        outcome.best["test_acc"],
        sum(r["epochs"] for r in outcome.table),
        wall,
        statistics.median(overheads) if overheads else float("nan"),
    )


def _first_step(exp_dir, trial_id: str) -> float | None:
    for path in exp_dir.glob(f"trial_{trial_id}/result.json"):
        line = path.read_text().splitlines()[0]
        return json.loads(line).get("fit_started_at")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="quick")
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--subset", type=int, help="training images (default: the space's)")
    parser.add_argument("--max-epochs", type=int, help="full budget (default: the space's)")
    parser.add_argument("--model", help="model (default: the space's)")
    parser.add_argument("--grace-period", type=int, help="ASHA grace (default: the space's)")
    parser.add_argument("--reduction-factor", type=float, help="ASHA factor (default: space's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES)
    )
    args = parser.parse_args()
    ray.init(address="local", include_dashboard=False, configure_logging=False)
    rows = []
    with tempfile.TemporaryDirectory() as storage:
        args.space_file = space_file(args, storage)
        for seed in args.seeds:
            for strategy in args.strategies:
                rows.append(run_one(strategy, seed, args, storage))
                print(f"[bench] {rows[-1]}", flush=True)
    print(
        f"\nspace {args.space} (model {args.model or 'default'}, grace "
        f"{args.grace_period or 'default'}, factor {args.reduction_factor or 'default'}), "
        f"{args.num_samples} trials per search, seeds {args.seeds}"
    )
    print(f"{'strategy':<24}{'best val':>9}{'test':>8}{'epochs':>8}{'wall s':>8}{'overhead s':>11}")
    for strategy in args.strategies:
        mine = [r for r in rows if r.strategy == strategy]
        val, test, epochs, wall, overhead = (
            statistics.mean(getattr(r, f) for r in mine)
            for f in ("best_val", "best_test", "epochs", "wall_s", "overhead_s")
        )
        print(f"{strategy:<24}{val:>9.4f}{test:>8.4f}{epochs:>8.1f}{wall:>8.0f}{overhead:>11.2f}")
    base = [r for r in rows if r.strategy == "random-fifo"]
    ours = [r for r in rows if r.strategy == "tpe-asha-pruned"]
    if base and ours:
        ratio = statistics.mean(r.epochs for r in ours) / statistics.mean(r.epochs for r in base)
        print(
            f"epochs tpe-asha-pruned / random-fifo: {ratio:.2f} (target <= 0.5 at equal accuracy)"
        )


if __name__ == "__main__":
    main()
