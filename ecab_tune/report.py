"""`python -m ecab_tune.report runs/<name>`: a Markdown or HTML report of a search, with plots.

Reads only the experiment folder (`trial_<id>/result.json` and `params.json`, plus `summary.json`
and `best/` once the search has finished), so it also reports a search that is still running.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ecab_tune import plots
from ecab_tune.layout import (
    ERROR_FILE,
    EXPORT_DIR,
    PARAMS_FILE,
    RESULT_FILE,
    SPACE_COPY,
    SUMMARY_FILE,
    TRIAL_PREFIX,
)
from ecab_tune.search.space import ATTN_PREFIX, Param, SearchSpace, SpaceError, load_space
from ecab_tune.statuses import (
    DIVERGED,
    ERRORED,
    INTERRUPTED,
    PENDING,
    RUNNING,
    STATUSES,
    ended_status,
)

REPORT_DIR = "report"
TOP_TRIALS = 10


# ---------------------------------------------------------------- the experiment's records
@dataclass(frozen=True)
class TrialRecord:
    trial_id: str
    params: dict[str, Any]
    history: tuple[dict[str, Any], ...]  # the last result reported for each epoch, in order
    status: str
    started_at: float  # wall clock; orders the trials as the search launched them

    @property
    def epochs(self) -> int:
        return int(self.history[-1]["epoch"]) if self.history else 0

    @property
    def train_seconds(self) -> float:
        return sum(float(r.get("seconds", 0.0)) for r in self.history)

    def values(self, metric: str, upto: int | None = None) -> list[float]:
        """The finite values of `metric` per epoch (up to epoch `upto`)."""
        return [
            float(r[metric])
            for r in self.history
            if isinstance(r.get(metric), (int, float))
            and math.isfinite(r[metric])
            and (upto is None or r["epoch"] <= upto)
        ]

    def best(self, metric: str, mode: str, upto: int | None = None) -> float:
        """The best value over epochs, as the search ranks trials (`scope="all"`); NaN if none."""
        values = self.values(metric, upto)
        return (max if mode == "max" else min)(values) if values else math.nan


@dataclass(frozen=True)
class Experiment:
    path: Path
    trials: tuple[TrialRecord, ...]  # in start order
    summary: dict[str, Any] | None  # None: the search has not finished (or was killed)
    space: SearchSpace | None
    space_source: str  # where `space` came from, or why there is none
    max_epochs: int
    max_epochs_source: str
    notes: tuple[str, ...]  # what was unreadable or assumed while loading

    @property
    def partial(self) -> bool:
        return self.summary is None or bool(self.summary.get("interrupted"))

    def counts(self) -> Counter[str]:
        return Counter(t.status for t in self.trials)


class ExperimentError(ValueError):
    """A folder that holds no experiment; the message names it."""


def read_json(path: Path) -> Any:
    """The parsed file, or None when it is missing or cut short (a write in progress)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_results(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The result lines of one trial and how many could not be parsed."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return [], 0
    results, bad = [], 0
    for line in filter(str.strip, lines):
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            bad += 1  # a line cut short by a killed driver
            continue
        if isinstance(result, dict) and "epoch" in result:
            results.append(result)
    return results, bad


def trial_status(folder: Path, results: list[dict[str, Any]], max_epochs: int, ended: bool) -> str:
    """What the files tell; `ended`: the search has finished, so nothing is still running."""
    last = results[-1] if results else {}
    if last.get("diverged"):
        return DIVERGED
    by_budget = ended_status(last.get("epoch", 0), max_epochs)
    # Ray marks the result on which a scheduler stopped a trial as done; one that returned on
    # its own (FIFO) writes no such result and is only known to have ended once the search has.
    if last.get("done"):
        return by_budget
    # A failed trial that Ray restarted has written results since its error.
    error, result = folder / ERROR_FILE, folder / RESULT_FILE
    if error.is_file() and (
        not result.is_file() or error.stat().st_mtime >= result.stat().st_mtime
    ):
        return ERRORED
    return by_budget if ended else RUNNING


def find_space(exp_dir: Path, summary: dict[str, Any] | None) -> tuple[SearchSpace | None, str]:
    """The exported copy of the space file, else the space summary.json names; and where from."""
    copy = exp_dir / EXPORT_DIR / SPACE_COPY
    name = (summary or {}).get("search", {}).get("space")
    source = copy if copy.is_file() else name
    if source is None:
        return None, "unknown until the search finishes and copies it out"
    try:
        return load_space(source), f"{name or 'unnamed'} ({source})"
    except SpaceError as exc:
        return None, f"unreadable: {exc}"


def load_experiment(exp_dir: Path) -> Experiment:
    folders = sorted(p for p in exp_dir.glob(f"{TRIAL_PREFIX}*") if p.is_dir())
    if not folders:
        what = "does not exist" if not exp_dir.is_dir() else f"holds no {TRIAL_PREFIX}* folders"
        raise ExperimentError(f"{exp_dir} {what}: not an experiment folder of ecab_tune.search")
    summary = read_json(exp_dir / SUMMARY_FILE)
    summary = summary if isinstance(summary, dict) else None
    space, space_source = find_space(exp_dir, summary)
    notes = []
    raw = []
    for folder in folders:
        results, bad = read_results(folder / RESULT_FILE)
        if bad:
            notes.append(f"{folder.name}/{RESULT_FILE}: {bad} unreadable line(s) skipped")
        raw.append((folder, results))

    # The search's resolved budget is only written at the end (the space's may be overridden).
    max_epochs = (summary or {}).get("search", {}).get("max_epochs")
    source = SUMMARY_FILE
    if not isinstance(max_epochs, int):
        longest = max((r[-1]["epoch"] for _, r in raw if r), default=1)
        max_epochs, source = longest, "assumed: the longest trial so far"

    # The search's own word for each trial, once it ended or was interrupted.
    said = {r.get("trial_id"): r.get("status") for r in (summary or {}).get("trials", [])}
    ended = summary is not None and not summary.get("interrupted")
    trials = []
    for folder, results in raw:
        trial_id = folder.name.removeprefix(TRIAL_PREFIX)
        by_epoch = {r["epoch"]: r for r in results}  # a re-reported epoch keeps its last result
        params = read_json(folder / PARAMS_FILE)
        if not isinstance(params, dict):
            params = results[-1].get("config", {}) if results else {}
        starts = [r["fit_started_at"] for r in results if "fit_started_at" in r]
        trials.append(
            TrialRecord(
                trial_id=trial_id,
                params=params,
                history=tuple(by_epoch[e] for e in sorted(by_epoch)),
                status=said[trial_id]
                if said.get(trial_id) in STATUSES
                else trial_status(folder, results, max_epochs, ended=ended),
                started_at=min(starts) if starts else folder.stat().st_mtime,
            )
        )
    trials.sort(key=lambda t: t.started_at)
    return Experiment(
        exp_dir, tuple(trials), summary, space, space_source, max_epochs, source, tuple(notes)
    )


def _epochs(n: int) -> str:
    return f"{n} epoch" + "s" * (n != 1)


def ranked(trials: Sequence[TrialRecord], metric: str, mode: str) -> list[TrialRecord]:
    """Trials with a value of `metric`, best first (ties: the earlier trial)."""
    sign = -1 if mode == "max" else 1
    scored = [t for t in trials if t.values(metric)]
    return sorted(scored, key=lambda t: sign * t.best(metric, mode))


# ---------------------------------------------------------------- parameter importances
def _distribution(values: Sequence[Any], declared: Param | None) -> Any:
    """The space's distribution when the values fit it (the file may have changed since the
    search ran), else one spanning the observed values."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if declared is not None and all(declared.contains(v) for v in values):
        return declared.distribution()
    if not numbers:
        return CategoricalDistribution(sorted(set(values), key=str))
    return FloatDistribution(min(values), max(values))


def comparable_trials(exp: Experiment, metric: str) -> tuple[list[TrialRecord], int]:
    """The trials whose parameters can be ranked, and the epoch budget to compare them at."""
    usable = [t for t in exp.trials if t.status not in (DIVERGED, ERRORED) and t.values(metric)]
    full = [t for t in usable if t.epochs >= exp.max_epochs]
    # Stopped trials scored after fewer epochs would rank budget, not parameters: compare the
    # full-budget trials, or, with fewer than two, every trial at the budget all of them reached.
    budget = exp.max_epochs if len(full) >= 2 else min((t.epochs for t in usable), default=0)
    return [t for t in usable if t.epochs >= budget], budget


def param_importances(exp: Experiment, metric: str, mode: str) -> tuple[dict[str, float], str]:
    """(importance per parameter, how it was computed), or ({}, why it could not be)."""
    import optuna

    compared, budget = comparable_trials(exp, metric)
    if len(compared) < 2:
        return {}, f"needs 2 trials with {metric} at the same budget; there are {len(compared)}"
    names = [
        n
        for n in compared[0].params
        if all(n in t.params for t in compared) and len({repr(t.params[n]) for t in compared}) > 1
    ]
    if not names:
        return {}, f"every parameter took one value across the {len(compared)} compared trials"
    declared = {p.name: p for p in exp.space.params} if exp.space else {}
    distributions = {
        n: _distribution([t.params[n] for t in compared], declared.get(n)) for n in names
    }
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line in a report
    try:
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={n: t.params[n] for n in names},
                distributions=distributions,
                value=t.best(metric, mode, upto=budget),
            )
            for t in compared
        ]
    )
    how = f"{len(compared)} trials' best {metric} within {_epochs(budget)}" + (
        "" if budget == exp.max_epochs else " (the budget every trial reached)"
    )
    failures = []
    # fANOVA and mean decrease impurity fit scikit-learn forests (their constructors import
    # it); PED-ANOVA needs only numpy, so an image without scikit-learn still gets importances.
    for name, make in (
        ("FanovaImportanceEvaluator", lambda: optuna.importance.FanovaImportanceEvaluator(seed=0)),
        (
            "MeanDecreaseImpurityImportanceEvaluator",
            lambda: optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0),
        ),
        ("PedAnovaImportanceEvaluator", optuna.importance.PedAnovaImportanceEvaluator),
    ):
        try:
            importances = optuna.importance.get_param_importances(study, evaluator=make())
        except (ImportError, ValueError, RuntimeError) as exc:
            failures.append(f"{name}: {exc}")
            continue
        fallback = f"; fANOVA failed: {failures[0]}" if failures else ""
        return importances, f"{name} over {how}{fallback}"
    return {}, "; ".join(failures)


# ---------------------------------------------------------------- figures
@dataclass(frozen=True)
class Plot:
    title: str
    file: str
    drawn: bool
    note: str = ""  # how it was made, or why it was skipped


@dataclass(frozen=True)
class ReportConfig:
    out: Path
    format: Literal["md", "html"]
    metric: str
    mode: Literal["max", "min"]


def _skipped(cfg: ReportConfig, title: str, file: str, why: str) -> Plot:
    (cfg.out / file).unlink(missing_ok=True)  # no stale figure from an earlier report
    return Plot(title, file, False, why)


def plot_history(exp: Experiment, cfg: ReportConfig) -> Plot:
    title, file = "Optimisation history", "history.png"
    scored = [t for t in exp.trials if t.values(cfg.metric)]
    if not scored:
        return _skipped(cfg, title, file, f"no trial has reported {cfg.metric} yet")
    values = [t.best(cfg.metric, cfg.mode) for t in scored]
    plots.optimisation_history(values, cfg.mode, cfg.out / file, ylabel=f"best {cfg.metric}")
    return Plot(title, file, True, "each trial's best value, trials in the order they started")


def plot_importances(exp: Experiment, cfg: ReportConfig) -> Plot:
    title, file = "Parameter importances", "importances.png"
    importances, how = param_importances(exp, cfg.metric, cfg.mode)
    if not importances:
        return _skipped(cfg, title, file, how)
    plots.horizontal_bars(
        importances, cfg.out / file, title=f"Importance for {cfg.metric}", xlabel="importance"
    )
    return Plot(title, file, True, how)


def plot_fusion_variants(exp: Experiment, cfg: ReportConfig) -> Plot:
    title, file = "Fusion variants (parallel coordinates)", "parallel_coordinates.png"
    names = sorted({n for t in exp.trials for n in t.params if n.startswith(ATTN_PREFIX)})
    names += ["lr"] if any("lr" in t.params for t in exp.trials) else []
    # Worst first, so the best lines are drawn on top.
    rows = ranked(exp.trials, cfg.metric, cfg.mode)[::-1]
    rows = [t for t in rows if all(n in t.params for n in names)]
    if not names or not rows:
        why = "no attention.* or lr parameter was searched" if not names else "no scored trial"
        return _skipped(cfg, title, file, why)
    space = {p.name: p.type for p in exp.space.params} if exp.space else {}
    plots.parallel_coordinates(
        {n: [t.params[n] for t in rows] for n in names},
        [t.best(cfg.metric, cfg.mode) for t in rows],
        cfg.out / file,
        colour_label=f"best {cfg.metric}",
        title="Attention options and learning rate",
        log_axes={n for n in names if space.get(n) in ("loguniform", "logint")},
        dashed=[t.epochs < exp.max_epochs for t in rows],
        cmap="viridis" if cfg.mode == "max" else "viridis_r",
    )
    return Plot(title, file, True, f"dashed: trials that ran fewer than {_epochs(exp.max_epochs)}")


def plot_cost(exp: Experiment, cfg: ReportConfig) -> Plot:
    title, file = "Accuracy vs cost", "cost.png"
    scored = ranked(exp.trials, cfg.metric, cfg.mode)
    if not scored:
        return _skipped(cfg, title, file, f"no trial has reported {cfg.metric} yet")
    plots.cost_tradeoff(
        {
            "epochs trained": [t.epochs for t in scored],
            "training time (s)": [t.train_seconds for t in scored],
        },
        [t.best(cfg.metric, cfg.mode) for t in scored],
        [t.trial_id for t in scored],
        cfg.mode,
        cfg.out / file,
        ylabel=f"best {cfg.metric}",
    )
    return Plot(title, file, True, "red: the Pareto front, the best value for at most that cost")


def plot_model_cost(exp: Experiment, cfg: ReportConfig) -> Plot:
    title, file = "Accuracy vs model cost (Pareto front)", "pareto.png"
    costs = {"MACs": "macs", "batch-1 latency (ms)": "latency_ms"}
    # Full-budget trials only: a stopped trial's accuracy would put budget on the y axis.
    scored = [t for t in ranked(exp.trials, cfg.metric, cfg.mode) if t.epochs >= exp.max_epochs]
    panels = {
        label: [float(t.history[-1][key]) for t in scored]
        for label, key in costs.items()
        if scored and all(isinstance(t.history[-1].get(key), int | float) for t in scored)
    }
    if not panels:
        why = "no full-budget trial reported macs or latency_ms (a search from before they were)"
        return _skipped(cfg, title, file, why)
    plots.cost_tradeoff(
        panels,
        [t.best(cfg.metric, cfg.mode) for t in scored],
        [t.trial_id for t in scored],
        cfg.mode,
        cfg.out / file,
        ylabel=f"best {cfg.metric}",
    )
    return Plot(
        title,
        file,
        True,
        f"full-budget trials; red: the Pareto front (python -m ecab_tune.search --objectives "
        f"{cfg.metric}:{cfg.mode},macs:min exports its members to pareto/)",
    )


def plot_best_curve(exp: Experiment, cfg: ReportConfig) -> Plot:
    title, file = "Learning curve of the best trial", "best_learning_curve.png"
    scored = ranked(exp.trials, cfg.metric, cfg.mode)
    if not scored:
        return _skipped(cfg, title, file, "no best trial yet")
    best = scored[0]
    panels = {
        name: {
            split: [float(r.get(f"{split}_{key}", math.nan)) for r in best.history]
            for split in ("train", "val")
        }
        for name, key in (("accuracy", "acc"), ("loss", "loss"))
    }
    epochs = [r["epoch"] for r in best.history]
    plots.epoch_curves(epochs, panels, cfg.out / file, title=f"Trial {best.trial_id}")
    return Plot(title, file, True, f"trial {best.trial_id}, {_epochs(best.epochs)}")


PLOTS = (
    plot_history,
    plot_importances,
    plot_fusion_variants,
    plot_cost,
    plot_model_cost,
    plot_best_curve,
)


# ---------------------------------------------------------------- the document
@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    file: str  # relative to the report
    alt: str


Block = Heading | Paragraph | Bullets | Table | Image


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 else f"{value:.3g}"
    return str(value)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_cell(v)}" for k, v in params.items()) or "none"


def overview(exp: Experiment, cfg: ReportConfig) -> list[Block]:
    counts = exp.counts()
    tally = ", ".join(
        f"{counts[s]} {s}" for s in STATUSES if counts[s] or s not in (INTERRUPTED, PENDING)
    )
    if exp.summary is None:
        state = (
            "Partial experiment: no summary.json yet, so the search is still running or was "
            "killed; everything below covers the trials recorded so far."
        )
    elif exp.partial:
        state = (
            "Interrupted experiment: `python -m ecab_tune.search --name NAME --resume` "
            "continues it; everything below covers the trials recorded so far."
        )
    else:
        state = "Finished experiment (summary.json present)."
    return [
        Heading(1, f"Search report: {exp.path.name}"),
        Paragraph(state),
        Bullets(
            (
                f"Folder: {exp.path}",
                f"Trials: {len(exp.trials)} ({tally})",
                f"Budget: {_epochs(exp.max_epochs)} per trial ({exp.max_epochs_source})",
                f"Search space: {exp.space_source}",
                f"Metric: {cfg.metric} ({cfg.mode})",
            )
        ),
    ]


def best_section(exp: Experiment, cfg: ReportConfig) -> list[Block]:
    scored = ranked(exp.trials, cfg.metric, cfg.mode)
    if not scored:
        return [Heading(2, "Best trial"), Paragraph(f"No trial has reported {cfg.metric} yet.")]
    best = scored[0]
    value = best.best(cfg.metric, cfg.mode)
    at = next(r["epoch"] for r in best.history if r.get(cfg.metric) == value)
    items = [
        f"Trial: {best.trial_id}",
        f"{cfg.metric}: {_cell(value)} (epoch {at})",
        f"Epochs: {best.epochs} of {exp.max_epochs} ({best.status})",
        f"Params: {_params(best.params)}",
    ]
    exported = (exp.summary or {}).get("best") or {}  # None: interrupted, nothing exported
    if exported.get("trial_id") == best.trial_id and "test_acc" in exported:
        items.append(
            f"Exported model ({EXPORT_DIR}/): test_acc {_cell(exported['test_acc'])} on "
            f"{exported.get('test_images', '?')} test images"
        )
    return [Heading(2, "Best trial"), Bullets(tuple(items))]


def top_table(exp: Experiment, cfg: ReportConfig) -> list[Block]:
    scored = ranked(exp.trials, cfg.metric, cfg.mode)[:TOP_TRIALS]
    names = sorted({n for t in scored for n in t.params})
    header = ("#", "trial", cfg.metric, "epochs", "train s", "status", *names)
    rows = tuple(
        (
            str(rank),
            t.trial_id,
            _cell(t.best(cfg.metric, cfg.mode)),
            str(t.epochs),
            f"{t.train_seconds:.0f}",
            t.status,
            *(_cell(t.params[n]) if n in t.params else "—" for n in names),
        )
        for rank, t in enumerate(scored, 1)
    )
    title = f"Top {len(rows)} trials by best {cfg.metric}"
    return [Heading(2, title), Table(header, rows)] if rows else []


def figures(drawn: Sequence[Plot]) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Figures")]
    for plot in drawn:
        blocks.append(Heading(3, plot.title))
        if plot.drawn:
            blocks += [Image(plot.file, plot.title), Paragraph(plot.note)]
        else:
            blocks.append(Paragraph(f"Skipped: {plot.note}."))
    return blocks


def build_document(exp: Experiment, cfg: ReportConfig, drawn: Sequence[Plot]) -> list[Block]:
    blocks = overview(exp, cfg) + best_section(exp, cfg) + top_table(exp, cfg) + figures(drawn)
    if exp.notes:
        blocks += [Heading(2, "Notes"), Bullets(exp.notes)]
    return blocks


def to_markdown(blocks: Sequence[Block]) -> str:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            lines = [row(block.header), row(["---"] * len(block.header))]
            parts.append("\n".join(lines + [row(r) for r in block.rows]))
        else:
            parts.append(f"![{block.alt}]({block.file})")
    return "\n\n".join(parts) + "\n"


def to_html(blocks: Sequence[Block], title: str) -> str:
    e = html.escape
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{e(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{e(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{e(c)}</th>" for c in block.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in block.rows
            )
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        else:
            parts.append(f'<img src="{e(block.file)}" alt="{e(block.alt)}">')
    style = (
        "body{font-family:sans-serif;max-width:60rem;margin:auto}img{max-width:100%}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{style}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def write_report(exp: Experiment, cfg: ReportConfig) -> Path:
    """The figures and `report.md` (or `.html`) in `cfg.out`; returns the report's path."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    drawn = [plot(exp, cfg) for plot in PLOTS]
    blocks = build_document(exp, cfg, drawn)
    path = cfg.out / f"report.{cfg.format}"
    text = to_markdown(blocks) if cfg.format == "md" else to_html(blocks, exp.path.name)
    path.write_text(text)
    return path


# ---------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ecab_tune.report",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n  python -m ecab_tune.report runs/quickstart --format html",
    )
    parser.add_argument("experiment", type=Path, help="experiment folder, e.g. runs/<name>")
    parser.add_argument(
        "--out", type=Path, help=f"output folder (default: <experiment>/{REPORT_DIR})"
    )
    parser.add_argument("--format", choices=("md", "html"), default="md", help="report format")
    parser.add_argument("--metric", default="val_acc", help="reported metric to rank trials by")
    parser.add_argument("--mode", choices=("max", "min"), default="max", help="better is max/min")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        exp = load_experiment(args.experiment)
    except ExperimentError as exc:
        parser.error(str(exc))
    numeric = {
        k
        for t in exp.trials
        for r in t.history
        for k, v in r.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    if numeric and args.metric not in numeric:
        parser.error(
            f"--metric {args.metric}: no trial in {exp.path} reports it; "
            f"they report: {', '.join(sorted(numeric))}"
        )
    out = args.out or args.experiment / REPORT_DIR
    cfg = ReportConfig(out, args.format, args.metric, args.mode)
    path = write_report(exp, cfg)
    print(f"[report] {len(exp.trials)} trials -> {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
