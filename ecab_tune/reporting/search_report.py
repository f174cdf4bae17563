"""The search report: an experiment's records as a document (overview, best trial, top trials,
attention options, figures) written with its figures to one folder, and a README's block."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ecab_tune.experiment import EXPORT_DIR, INTERRUPTED, PENDING, RUNNING, STATUSES
from ecab_tune.reporting.document import (
    Block,
    Bullets,
    Heading,
    Image,
    Paragraph,
    Table,
    cell,
    epochs_text,
    rebuild_block,
    to_html,
    to_markdown,
)
from ecab_tune.reporting.importance import common_budget, comparable_trials
from ecab_tune.reporting.search_figures import Plot, ReportConfig, draw_figures
from ecab_tune.reporting.trials import Experiment, ranked
from ecab_tune.search.config import SearchConfig, resume_command
from ecab_tune.search.results import TOP_TRIALS, TrialRow, params_text, trial_table
from ecab_tune.search.space import ATTN_PREFIX

# What a README shows of a search: which parameters mattered, and how the fusion variants did.
README_FIGURES = ("importances.png", "importances_every_trial.png", "parallel_coordinates.png")


def overview(exp: Experiment, cfg: ReportConfig) -> list[Block]:
    counts = exp.counts()
    # Zero of an ending is news (nothing diverged); zero of a passing state is not, nor is
    # "0 running" once the search has ended.
    passing = (INTERRUPTED, PENDING) if exp.summary is None else (INTERRUPTED, PENDING, RUNNING)
    tally = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s] or s not in passing)
    baselines = [f"Baselines: {', '.join(b.arm for b in cfg.baselines)} of {cfg.study}"]
    if exp.summary is None:
        state = (
            "Partial experiment: no summary.json yet, so the search is still running or was "
            "killed; everything below covers the trials recorded so far."
        )
    elif exp.partial:
        # The search's own words (a report of a --snapshot copy names the real experiment).
        said = exp.summary.get("search") or {}
        resume = resume_command(
            SearchConfig(
                name=said.get("name", exp.path.name),
                storage=said.get("storage", str(exp.path.parent)),
                snapshot=said.get("snapshot"),
            )
        )
        state = (
            f"Interrupted experiment: `{resume}` continues it; everything below covers the "
            "trials recorded so far."
        )
    else:
        state = "Finished experiment (summary.json present)."
    return [
        Heading(1, f"Search report: {exp.path.name}"),
        Paragraph(state),
        Bullets(
            (
                f"Folder: {exp.path}",
                f"Trials: {exp.planned} ({tally})",
                f"Budget: {epochs_text(exp.max_epochs)} per trial ({exp.max_epochs_source})",
                compute_text(exp),
                f"Search space: {exp.space_source}",
                f"Metric: {cfg.metric} ({cfg.mode})",
                *(baselines if cfg.baselines else []),
            )
        ),
    ]


def compute_text(exp: Experiment) -> str:
    epochs = sum(t.epochs for t in exp.trials)
    full = exp.planned * exp.max_epochs  # the trials asked for, made or not
    if not epochs:
        return "Compute: no epoch trained yet"
    hours = sum(t.wall_seconds for t in exp.trials) / 3600
    return (
        f"Compute: {epochs_text(epochs)} trained, {epochs / full:.2f}x of every trial's full "
        f"budget ({full}); {hours:.2f} trial-hours (summed over trials, which ran side by side)"
    )


def best_section(exp: Experiment, cfg: ReportConfig) -> list[Block]:
    scored = ranked(exp.trials, cfg.metric, cfg.mode)
    if not scored:
        return [Heading(2, "Best trial"), Paragraph(f"No trial has reported {cfg.metric} yet.")]
    best = scored[0]
    value = best.best(cfg.metric, cfg.mode)
    at = next(r["epoch"] for r in best.history if r.get(cfg.metric) == value)
    items = [
        f"Trial: {best.trial_id}",
        f"{cfg.metric}: {cell(value)} (epoch {at})",
        f"Epochs: {best.epochs} of {exp.max_epochs} ({best.status})",
        f"Params: {params_text(best.params)}",
    ]
    exported = (exp.summary or {}).get("best") or {}  # None: interrupted, nothing exported
    if exported.get("trial_id") == best.trial_id and "test_acc" in exported:
        items.append(
            f"Exported model ({EXPORT_DIR}/): test_acc {cell(exported['test_acc'])} on "
            f"{exported.get('test_images', '?')} test images"
        )
    return [Heading(2, "Best trial"), Bullets(tuple(items))]


def top_table(exp: Experiment, cfg: ReportConfig) -> list[Block]:
    """The search's own trial table (what it printed when it ended), from the folder."""
    rows = [
        TrialRow(
            trial_id=t.trial_id,
            best=t.best(cfg.metric, cfg.mode),
            epochs=t.epochs,
            time_s=t.wall_seconds,
            status=t.status,
            params=t.params,
        )
        for t in ranked(exp.trials, cfg.metric, cfg.mode)[:TOP_TRIALS]
    ]
    if not rows:
        return []
    header, cells = trial_table(rows, cfg.metric)
    return [Heading(2, f"Top {len(rows)} trials by best {cfg.metric}"), Table(header, tuple(cells))]


def options_table(exp: Experiment, cfg: ReportConfig) -> list[Block]:
    """Each value of each attention option: how the trials that took it did within the budget
    every ended trial reached, and how many went on to the full budget, with the best there."""
    common = common_budget(exp, cfg.metric)
    compared = comparable_trials(exp, cfg.metric, common)[0] if common else []
    names = sorted({n for t in compared for n in t.params if n.startswith(ATTN_PREFIX)})
    if not names:
        return []
    pick = max if cfg.mode == "max" else min
    rows = []
    for name in names:
        for value in sorted({t.params[name] for t in compared if name in t.params}, key=str):
            took = [t for t in compared if name in t.params and t.params[name] == value]
            early = [t.best(cfg.metric, cfg.mode, upto=common) for t in took]
            full = [t.best(cfg.metric, cfg.mode) for t in took if t.epochs >= exp.max_epochs]
            rows.append(
                (
                    name.removeprefix(ATTN_PREFIX), str(value), str(len(took)),
                    cell(sum(early) / len(early)), cell(pick(early)),
                    str(len(full)), cell(pick(full)) if full else "-",
                )
            )  # fmt: skip
    at, full_at = epochs_text(common), epochs_text(exp.max_epochs)
    # Two columns of one heading when every compared trial reached the full budget.
    early_best = f"best within {at}" if common < exp.max_epochs else "best"
    header = (
        "option", "value", "trials", f"mean within {at}", early_best,
        f"ran {full_at}", f"best within {full_at}",
    )  # fmt: skip
    return [
        Heading(2, "Attention options"),
        Paragraph(
            f"Best {cfg.metric} of the trials that took each value. The sampler chose the "
            "values and ASHA chose which trials went on, so the groups differ in size and in "
            "their other parameters: this describes the search, it is not a controlled "
            "comparison."
        ),
        Table(header, tuple(rows)),
    ]


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
    blocks = overview(exp, cfg) + best_section(exp, cfg) + top_table(exp, cfg)
    blocks += options_table(exp, cfg) + figures(drawn)
    if exp.notes:
        blocks += [Heading(2, "Notes"), Bullets(exp.notes)]
    return blocks


def readme_tag(exp: Experiment) -> str:
    return f"search:{exp.path.name}"


def readme_section(exp: Experiment, cfg: ReportConfig, drawn: Sequence[Plot], readme: Path) -> str:
    """A README's block of this search: the overview, the best and top trials one heading
    level down, and the figures that say what mattered, linked from where the README is."""
    where = readme.parent
    blocks = overview(exp, cfg)[1:]  # the README has its own title
    for block in best_section(exp, cfg) + top_table(exp, cfg) + options_table(exp, cfg):
        blocks.append(Heading(block.level + 1, block.text) if isinstance(block, Heading) else block)
    for plot in drawn:
        if plot.drawn and plot.file in README_FIGURES:
            blocks.append(Image(os.path.relpath(cfg.out / plot.file, where), plot.title))
    report = os.path.relpath(cfg.out / f"report.{cfg.format}", where)
    blocks.append(Paragraph(f"The whole report, every figure with its note: [{report}]({report})."))
    return to_markdown(blocks)


def write_report(exp: Experiment, cfg: ReportConfig, readme: Path | None = None) -> Path:
    """The figures and `report.md` (or `.html`) in `cfg.out`, and with `readme` that file's
    `<!-- begin search:NAME -->` block; returns the report's path."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    drawn = draw_figures(exp, cfg)
    blocks = build_document(exp, cfg, drawn)
    path = cfg.out / f"report.{cfg.format}"
    text = to_markdown(blocks) if cfg.format == "md" else to_html(blocks, exp.path.name)
    path.write_text(text)
    if readme is not None:
        rebuild_block(readme, readme_tag(exp), readme_section(exp, cfg, drawn, readme))
    return path
