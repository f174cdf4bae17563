"""`python -m ecab_tune.report runs/<name>`: a Markdown or HTML report of a search, with plots.

Reads only the experiment folder (`trial_<id>/result.json` and `params.json`, plus `summary.json`
and `best/` once the search has finished), so it also reports a search that is still running.
With `--study`, the plain and SE arms of a study (`python -m ecab_tune.compare`) are marked on
the accuracy-vs-cost fronts. The work is done in `ecab_tune.reporting`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ecab_tune.config import command_parser, out_folder
from ecab_tune.reporting.baselines import StudyError, load_baselines
from ecab_tune.reporting.document import check_block
from ecab_tune.reporting.search_figures import ReportConfig
from ecab_tune.reporting.search_report import readme_tag, write_report
from ecab_tune.reporting.trials import ExperimentError, load_experiment
from ecab_tune.search.objectives import natural_mode

REPORT_DIR = "report"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "python -m ecab_tune.report",
        __doc__,
        "python -m ecab_tune.report runs/quickstart --format html",
        "python -m ecab_tune.report runs/quickstart "
        "--study benchmarks/results/fmnist-resnet20-pilot30",
    )
    parser.add_argument("experiment", type=Path, help="experiment folder, e.g. runs/<name>")
    parser.add_argument(
        "--out", type=out_folder, help=f"output folder (default: <experiment>/{REPORT_DIR})"
    )
    parser.add_argument("--format", choices=("md", "html"), default="md", help="report format")
    parser.add_argument(
        "--metric",
        help="reported metric to rank trials by (default: the search's first objective, the "
        "one best/ was chosen by)",
    )
    parser.add_argument(
        "--mode",
        choices=("max", "min"),
        help="better is max/min (default: the search's, for a metric it optimised; else min "
        "for losses, seconds and costs, max for the rest)",
    )
    parser.add_argument(
        "--study",
        type=Path,
        help="a study's results folder (or its runs.jsonl): mark its plain and SE arms on the "
        "accuracy-vs-cost fronts, where it recorded that cost",
    )
    parser.add_argument(
        "--readme",
        type=Path,
        help="also rebuild this Markdown file's <!-- begin search:NAME --> ... <!-- end "
        "search:NAME --> block (NAME: the experiment folder's name), e.g. README.md",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        exp = load_experiment(args.experiment)
    except ExperimentError as exc:
        parser.error(str(exc))
    metric = args.metric or exp.objectives[0].metric
    modes = {o.metric: o.mode for o in exp.objectives}
    mode = args.mode or modes.get(metric) or natural_mode(metric)
    numeric = {
        k
        for t in exp.trials
        for r in t.history
        for k, v in r.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    if numeric and metric not in numeric:
        parser.error(
            f"{'--metric' if args.metric else 'the search objective'} {metric}: no trial in "
            f"{exp.path} reports it; "
            f"they report: {', '.join(sorted(numeric))}"
        )
    try:
        baselines = load_baselines(args.study, metric, mode) if args.study else []
    except StudyError as exc:
        parser.error(str(exc))
    out = args.out or args.experiment / REPORT_DIR
    cfg = ReportConfig(out, args.format, metric, mode, tuple(baselines), str(args.study or ""))
    if args.readme:  # before any figure is drawn
        try:
            check_block(args.readme, readme_tag(exp))
        except ValueError as exc:
            parser.error(f"--readme {exc}")
    path = write_report(exp, cfg, args.readme)
    also = f" and {args.readme}" if args.readme else ""
    print(f"[report] {len(exp.trials)} trial folders read -> {path}{also}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
