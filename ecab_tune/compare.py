"""`python -m ecab_tune.compare STUDY.yaml`: run a pre-registered study, resumably, and its report.

Each (arm, seed) run is a line of `OUT/runs.jsonl` as soon as it finishes; running the same
command again trains only what is missing. `--report` rebuilds `table.md` and the figures from
that file alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from pathlib import Path

from ecab_tune.cluster import ClusterJoinError, check_resources
from ecab_tune.config import command_parser, out_folder
from ecab_tune.data import DatasetNotFoundError
from ecab_tune.device import DeviceError, resolve_device
from ecab_tune.interrupts import sigterm_as_sigint
from ecab_tune.reporting.document import check_block
from ecab_tune.study.analysis import readme_tag, update_readme, write_report
from ecab_tune.study.runner import pending_jobs, run_local, run_ray, study_rows
from ecab_tune.study.spec import GROUPS, Job, StudySpec, load_spec


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "python -m ecab_tune.compare",
        __doc__,
        "python -m ecab_tune.compare studies/fmnist-resnet20.yaml --jobs 2",
        "python -m ecab_tune.compare studies/fmnist-resnet20.yaml --report --readme README.md",
        "python -m ecab_tune.compare studies/fmnist-resnet20.yaml --seeds 2 --epochs 1 "
        "--subset 2000 --out runs/study-smoke",
    )
    parser.add_argument("study", help="the study file (YAML), e.g. studies/fmnist-resnet20.yaml")
    parser.add_argument(
        "--out", type=out_folder, help="results folder (default: benchmarks/results/<name>)"
    )
    parser.add_argument(
        "--report", action="store_true", help="only rebuild the table and figures from runs.jsonl"
    )
    parser.add_argument(
        "--readme",
        type=Path,
        help="also rebuild this Markdown file's <!-- begin study:NAME --> ... <!-- end "
        "study:NAME --> block (table, notes, figures), e.g. README.md",
    )
    small = parser.add_argument_group("overrides for small runs (use another --out)")
    small.add_argument("--seeds", type=int, help="seeds 0..N-1 instead of the file's")
    small.add_argument("--epochs", type=int, help="epochs instead of the file's")
    small.add_argument("--subset", type=int, help="train on a stratified subset of N images")
    small.add_argument("--arms", nargs="+", help="only these arms (baseline and focus stay)")
    small.add_argument(
        "--only",
        nargs="+",
        choices=GROUPS,
        help="train only these groups' runs (to split a study between machines); the report "
        "covers every run in runs.jsonl",
    )
    small.add_argument(
        "--only-seeds",
        nargs="+",
        type=int,
        metavar="SEED",
        help="train only these seeds' runs (whole seeds per machine keep each seed's paired "
        "runs on one device)",
    )
    where = parser.add_argument_group("where runs go")
    where.add_argument("--jobs", type=int, default=1, help="runs at once on this machine")
    where.add_argument("--device", default="auto", help="auto, cpu or cuda (local runs)")
    where.add_argument(
        "--streams",
        action="store_true",
        help="with CUDA: the runs at once are threads of one process, each on its own stream "
        "(their kernels can overlap; processes take turns on a GPU)",
    )
    where.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="replay each training step as one CUDA graph (fp32/bf16; same runs, faster)",
    )
    where.add_argument("--data-dir", help="folder that holds the dataset (default: the file's)")
    where.add_argument("--address", help="a Ray cluster ('auto', ray://host:10001) instead")
    where.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per Ray task")
    where.add_argument(
        "--gpus-per-trial", type=float, default=0.0, help="GPUs per Ray task (fractions share)"
    )
    return parser


def configure(args: argparse.Namespace) -> tuple[StudySpec, StudySpec, Path]:
    """The study to train (narrowed by `--arms`), the study to report (every arm: `--arms`
    narrows what is trained now, not the question nor Holm's family), and the results folder."""
    spec = load_spec(args.study).overridden(
        seeds=args.seeds, epochs=args.epochs, subset=args.subset
    )
    if args.cuda_graphs:
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, cuda_graphs=True))
    if args.data_dir:
        spec = dataclasses.replace(
            spec, data=dataclasses.replace(spec.data, data_dir=args.data_dir)
        )
    if args.jobs < 1:
        raise ValueError(f"--jobs={args.jobs} must be >= 1")
    if not args.address:
        resolve_device(args.device)  # here, in one line, not in every worker
    check_resources(args.cpus_per_trial, args.gpus_per_trial)
    if args.readme:  # checked now, not after hours of runs
        try:
            check_block(args.readme, readme_tag(spec))
        except ValueError as exc:
            raise ValueError(f"--readme {exc}") from exc
    out = Path(args.out or f"benchmarks/results/{spec.name}")
    return spec.overridden(arms=args.arms), spec, out


def selected_jobs(spec: StudySpec, groups: list[str] | None, seeds: list[int] | None) -> list[Job]:
    """The study's runs in the named groups and seeds (all where None)."""
    jobs = [j for j in spec.jobs() if j.group in (groups or GROUPS)]
    if not jobs:
        raise ValueError(f"--only {' '.join(groups or GROUPS)} selects none of this study's runs")
    missing = sorted(set(seeds or []) - {j.seed for j in jobs})
    if missing:
        have = sorted({j.seed for j in jobs})
        raise ValueError(
            f"--only-seeds: no run has seed {missing[0]} (seeds here: {have[0]}..{have[-1]})"
        )
    return [j for j in jobs if seeds is None or j.seed in seeds]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    received: list[int] = []  # SIGTERM, once it came
    try:
        spec, whole, out = configure(args)
        if not args.report:
            wanted = selected_jobs(spec, args.only, args.only_seeds)
            jobs = [j for j in pending_jobs(spec, out) if j in wanted]
            only = [*(args.only or []), *(f"seed {s}" for s in args.only_seeds or [])]
            print(
                f"[study] {spec.name}: {len(wanted)} runs of {len(spec.all_arms())} arms"
                f"{' (' + ', '.join(only) + ')' if only else ''}; "
                f"{len(wanted) - len(jobs)} already in {out}/runs.jsonl, {len(jobs)} to train "
                f"({args.jobs} at once)",
                flush=True,
            )
            with sigterm_as_sigint(received):
                if jobs and args.address:
                    run_ray(spec, jobs, out, args.address, args.cpus_per_trial, args.gpus_per_trial)
                elif jobs:
                    run_local(spec, jobs, out, args.jobs, args.device, args.streams)
        rows = study_rows(whole, out)
        if not rows:
            raise ValueError(f"{out}/runs.jsonl holds no runs yet: run the study first")
        table = write_report(whole, rows, out)
        if args.readme:
            update_readme(whole, table, out, args.readme)
    except ClusterJoinError as exc:  # one line, without the usage a flag error gets
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, DatasetNotFoundError, DeviceError) as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        print(
            f"\n[study] interrupted: finished runs are in {out}/runs.jsonl; the same command "
            "resumes",
            flush=True,
        )
        return 128 + (received[0] if received else signal.SIGINT)
    where = f"{out}" + (f" and {args.readme}" if args.readme else "")
    print("\n" + table + f"\n[study] table and figures in {where}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
