"""Search efficiency: Optuna+ASHA vs. random+FIFO at equal trial count on the same data.

Runs real searches (embedded Ray) side by side and prints, per strategy: best validation and
test accuracy, total epochs spent, wall time, and the per-trial overhead (trial started by Tune
-> its first training step). Also runs Optuna+ASHA with ASHA-stopped trials recorded as
COMPLETE (Ray's default) to show what telling Optuna they were PRUNED buys. The summary pairs
each ASHA search with random+FIFO of the same seed: epochs ratio, and the paired 95% interval of
the accuracy differences. `--csv` appends every search (with its settings) to a file, so runs of
several sessions add up; `--summarize CSV` prints the summary of such a file without running.

    python benchmarks/search_efficiency.py --space bridge --model resnet8 --subset 6000 \
        --max-epochs 12 --num-samples 16 --seeds 0 1 2 \
        --csv benchmarks/results/search_efficiency.csv
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import ray
import yaml
from ray import tune

from ecab_tune.experiment import TRIAL_PREFIX, read_results
from ecab_tune.reporting.stats import paired_contrast
from ecab_tune.search import SearchConfig, load_space, run_search
from ecab_tune.search.config import space_data
from ecab_tune.search.space import resolve_path

STRATEGIES = {
    "tpe-asha-pruned": dict(searcher="optuna", scheduler="asha", stopped_trials="pruned"),
    "tpe-asha-complete": dict(searcher="optuna", scheduler="asha", stopped_trials="complete"),
    "mtpe-asha-pruned": dict(
        searcher="optuna", scheduler="asha", stopped_trials="pruned", multivariate=True
    ),
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
    space = load_space(args.space_file)
    subset = space.defaults.subset if args.subset is None else args.subset
    cfg = SearchConfig(
        space=args.space_file,
        name=f"{strategy}-s{seed}",
        storage=storage,
        seed=seed,
        num_samples=args.num_samples,
        data=dataclasses.replace(space_data(space, subset=subset), val_fraction=args.val_fraction),
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
        first = _first_step(outcome.experiment_dir, row.trial_id)
        if first is not None and row.trial_id in starts.started:
            overheads.append(first - starts.started[row.trial_id])
    return Row(
        strategy,
        seed,
        max(r.best for r in outcome.table),  # the space's metric: val_acc
        outcome.best["test_acc"],
        sum(r.epochs for r in outcome.table),
        wall,
        statistics.median(overheads) if overheads else float("nan"),
    )


def _first_step(exp_dir, trial_id: str) -> float | None:
    rows = read_results(exp_dir / f"{TRIAL_PREFIX}{trial_id}").rows
    return rows[0].get("fit_started_at") if rows else None


NUMBERS = ("best_val", "best_test", "epochs", "wall_s", "overhead_s")


def settings(args: argparse.Namespace) -> dict[str, str]:
    """What a search ran under, from the space as run (its defaults where not overridden)."""
    space = load_space(args.space_file)
    return dict(
        space=args.space,
        model=space.defaults.model,
        subset=str(args.subset or space.defaults.subset or "all"),
        val_fraction=f"{args.val_fraction:g}",
        max_epochs=str(args.max_epochs or space.defaults.max_epochs),
        grace_period=str(space.scheduler.grace_period),
        reduction_factor=f"{space.scheduler.reduction_factor:g}",
        num_samples=str(args.num_samples),
    )


def append_csv(path: str, rec: dict[str, Any]) -> None:
    """One row more; a file written before a column existed is rewritten with it (empty)."""
    rows: list[dict[str, str]] = []
    if os.path.exists(path):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    fields = list(rec) + [k for k in (rows[0] if rows else {}) if k not in rec]
    if rows and list(rows[0]) != fields:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if not rows:
            writer.writeheader()
        writer.writerow(rec)


def read_csv(path: str) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.update({k: float(r[k]) for k in NUMBERS}, seed=int(r["seed"]))
        r["val_fraction"] = r.get("val_fraction") or "0.1"  # rows from before the flag
    return rows


def _label(r: dict[str, Any]) -> str:
    asha = STRATEGIES[r["strategy"]]["scheduler"] == "asha"
    return r["strategy"] + (
        f" (grace {r['grace_period']}, factor {r['reduction_factor']})" if asha else ""
    )


def summarize(records: list[dict[str, Any]]) -> None:
    """Per setting: each strategy's means over seeds, then TPE+ASHA against random+FIFO
    paired by seed (random+FIFO ignores the ASHA settings, so it pairs with each of them)."""
    setting = ("space", "model", "subset", "val_fraction", "max_epochs", "num_samples")
    by_setting: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in records:
        by_setting.setdefault(tuple(r[k] for k in setting), []).append(r)
    for mine in by_setting.values():
        # A seed twice (the command run again) would average two runs and pair each ASHA run
        # with whichever random-fifo row came last: runs of different sessions.
        runs = [(_label(r), r["seed"]) for r in mine]
        twice = sorted({run for run in runs if runs.count(run) > 1})
        if twice:
            label, seed = twice[0]
            raise ValueError(
                f"{label} has seed {seed} more than once under one setting: keep one row per "
                "seed (the rows of one run), or use another --csv"
            )
    for key, mine in sorted(by_setting.items()):
        print("\n" + ", ".join(f"{k} {v}" for k, v in zip(setting, key, strict=True)))
        print(
            f"{'strategy':<34}{'seeds':>6}{'best val':>9}{'test':>8}{'epochs':>8}"
            f"{'wall s':>8}{'overhead s':>11}"
        )
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in mine:
            groups.setdefault(_label(r), []).append(r)
        for label, rows in groups.items():
            val, test, epochs, wall, overhead = (
                statistics.fmean(r[k] for r in rows) for k in NUMBERS
            )
            print(
                f"{label:<34}{len(rows):>6}{val:>9.4f}{test:>8.4f}{epochs:>8.1f}"
                f"{wall:>8.0f}{overhead:>11.2f}"
            )
        base = {r["seed"]: r for r in mine if r["strategy"] == "random-fifo"}
        for label, rows in groups.items():
            pairs = [(r, base[r["seed"]]) for r in rows if r["seed"] in base]
            if label == "random-fifo" or not pairs:
                continue
            ratio = sum(a["epochs"] for a, _ in pairs) / sum(b["epochs"] for _, b in pairs)
            line = f"{label} vs random-fifo, {len(pairs)} seed(s): epochs {ratio:.2f}x"
            for k in ("best_val", "best_test") if len(pairs) > 1 else ():
                a_k, b_k = [100 * a[k] for a, _ in pairs], [100 * b[k] for _, b in pairs]
                c = paired_contrast(k, a_k, b_k)
                line += f"; {k} {c.mean:+.2f} pts [{c.low:+.1f}, {c.high:+.1f}]"
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="quick")
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--subset", type=int, help="training images (default: the space's)")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="validation share of the training images (the search selects on it)",
    )
    parser.add_argument("--max-epochs", type=int, help="full budget (default: the space's)")
    parser.add_argument("--model", help="model (default: the space's)")
    parser.add_argument("--grace-period", type=int, help="ASHA grace (default: the space's)")
    parser.add_argument("--reduction-factor", type=float, help="ASHA factor (default: space's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES)
    )
    parser.add_argument("--csv", help="append one row per search to this CSV file")
    parser.add_argument(
        "--summarize", metavar="CSV", help="run nothing: summarize the searches in this CSV"
    )
    args = parser.parse_args()
    if args.summarize:
        try:
            records = read_csv(args.summarize)
        except (OSError, KeyError, ValueError) as e:
            parser.error(f"--summarize {args.summarize}: not a CSV this script wrote ({e!r})")
        try:
            summarize(records)
        except ValueError as e:
            parser.error(f"--summarize {args.summarize}: {e}")
        return
    ray.init(address="local", include_dashboard=False, configure_logging=False)
    records = []
    with tempfile.TemporaryDirectory() as storage:
        args.space_file = space_file(args, storage)
        ran_under = settings(args)
        for seed in args.seeds:
            for strategy in args.strategies:
                row = run_one(strategy, seed, args, storage)
                print(f"[bench] {row}", flush=True)
                records.append({**ran_under, **dataclasses.asdict(row)})
                if args.csv:
                    append_csv(args.csv, records[-1])
    summarize(records)
    print("target: the same best accuracy (within noise) for <= 0.5x the epochs")


if __name__ == "__main__":
    main()
