"""The search report's settings and its figures: each drawn from an experiment's records into
the report's folder, or skipped with the reason (and any stale copy removed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ecab_tune.experiment import DIVERGED
from ecab_tune.reporting import optuna_studies, plots
from ecab_tune.reporting.baselines import Baseline
from ecab_tune.reporting.document import epochs_text
from ecab_tune.reporting.importance import common_budget, comparable_trials, param_importances
from ecab_tune.reporting.trials import Experiment, TrialRecord, ranked
from ecab_tune.search.space import ATTN_PREFIX


@dataclass(frozen=True)
class ReportConfig:
    out: Path
    format: Literal["md", "html"]
    metric: str
    mode: Literal["max", "min"]
    baselines: tuple[Baseline, ...] = ()  # a study's plain and SE arms, marked on cost fronts
    study: str = ""  # where the baselines came from


@dataclass(frozen=True)
class Plot:
    title: str
    file: str
    drawn: bool
    note: str = ""  # how it was made, or why it was skipped


def _skipped(cfg: ReportConfig, title: str, file: str, why: str) -> Plot:
    (cfg.out / file).unlink(missing_ok=True)  # no stale figure from an earlier report
    return Plot(title, file, False, why)


def plot_history(exp: Experiment, cfg: ReportConfig) -> Plot:
    title, file = "Optimisation history", "history.png"
    scored = [t for t in exp.trials if t.values(cfg.metric)]
    if not scored:
        return _skipped(cfg, title, file, f"no trial has reported {cfg.metric} yet")
    study = optuna_studies.values_study(
        [t.best(cfg.metric, cfg.mode) for t in scored], [t.trial_id for t in scored], cfg.mode
    )
    plots.optimisation_history(study, cfg.out / file, ylabel=f"best {cfg.metric}")
    return Plot(title, file, True, "each trial's best value, trials in the order they started")


def plot_importances(exp: Experiment, cfg: ReportConfig, *, every_trial: bool = False) -> Plot:
    """At the full budget (the few trials ASHA let finish: what sets the best apart), or with
    `every_trial` at the budget all that ended reached (the whole space, early in training)."""
    title, file = "Parameter importances", "importances.png"
    budget = None
    if every_trial:
        title, file = "Parameter importances, every trial", "importances_every_trial.png"
        budget = common_budget(exp, cfg.metric)
        if budget and budget == comparable_trials(exp, cfg.metric)[1]:
            return _skipped(cfg, title, file, "the figure above compares every trial already")
    importances = param_importances(exp, cfg.metric, cfg.mode, budget)
    if not importances.values:
        return _skipped(cfg, title, file, importances.how)
    n, within = len(importances.study.trials), epochs_text(importances.budget)
    plots.param_importances(
        importances.study,
        importances.evaluator,
        cfg.out / file,
        target_name=cfg.metric,
        title=f"{title}: {n} trials within {within}",
    )
    return Plot(title, file, True, importances.how)


def plot_curves(exp: Experiment, cfg: ReportConfig) -> Plot:
    title, file = "Learning curves of every trial", "intermediate_values.png"
    curves = {
        t.trial_id: {
            int(r["epoch"]): float(r[cfg.metric])
            for r in t.history
            if isinstance(r.get(cfg.metric), (int, float)) and math.isfinite(r[cfg.metric])
        }
        for t in exp.trials
    }
    if not any(curves.values()):
        return _skipped(cfg, title, file, f"no trial has reported {cfg.metric} yet")
    plots.intermediate_values(
        optuna_studies.curves_study(curves, cfg.mode), cfg.out / file, ylabel=cfg.metric
    )
    return Plot(title, file, True, f"{cfg.metric} after each epoch; a short line: a stopped trial")


def plot_fusion_variants(exp: Experiment, cfg: ReportConfig) -> Plot:
    title, file = "Fusion variants (parallel coordinates)", "parallel_coordinates.png"
    # Worst first, so the best lines are drawn on top.
    rows = ranked(exp.trials, cfg.metric, cfg.mode)[::-1]
    names = sorted({n for t in rows for n in t.params if n.startswith(ATTN_PREFIX)})
    names += ["lr"] if any("lr" in t.params for t in rows) else []
    if not names or not rows:
        why = "no attention.* or lr parameter was searched" if rows else "no scored trial"
        return _skipped(cfg, title, file, why)
    space = {p.name: p.type for p in exp.space.params} if exp.space else {}
    plots.parallel_coordinates(
        # Every trial, a conditional option it did not draw (`project` under sum) as n/a.
        {n: [t.params.get(n) for t in rows] for n in names},
        [t.best(cfg.metric, cfg.mode) for t in rows],
        cfg.out / file,
        colour_label=f"best {cfg.metric}",
        title="Attention options and learning rate",
        log_axes={n for n in names if space.get(n) in ("loguniform", "logint")},
        dashed=[t.epochs < exp.max_epochs for t in rows],
        cmap="viridis" if cfg.mode == "max" else "viridis_r",
    )
    conditional = [n for n in names if any(n not in t.params for t in rows)]
    note = f"; n/a: a trial that did not draw {' or '.join(conditional)}" if conditional else ""
    return Plot(
        title,
        file,
        True,
        f"dashed: trials that ran fewer than {epochs_text(exp.max_epochs)}; every scored "
        f"trial ({len(rows)}){note}",
    )


def _front(
    cfg: ReportConfig,
    trials: Sequence[TrialRecord],
    costs: Sequence[float],
    file: str,
    xlabel: str,
    references: dict[str, tuple[float, float]] | None = None,
) -> list[str]:
    study = optuna_studies.tradeoff_study(
        costs,
        [t.best(cfg.metric, cfg.mode) for t in trials],
        [t.trial_id for t in trials],
        cfg.mode,
    )
    return plots.cost_front(
        study, cfg.out / file, xlabel=xlabel, ylabel=f"best {cfg.metric}", references=references
    )


def training_cost_plots(exp: Experiment, cfg: ReportConfig) -> list[Plot]:
    """Accuracy vs epochs trained and vs training time, every scored trial."""
    scored = ranked(exp.trials, cfg.metric, cfg.mode)
    out = []
    for title, file, xlabel, cost in (
        ("Accuracy vs epochs trained", "cost_epochs.png", "epochs trained", "epochs"),
        ("Accuracy vs training time", "cost_time.png", "training time (s)", "train_seconds"),
    ):
        if not scored:
            out.append(_skipped(cfg, title, file, f"no trial has reported {cfg.metric} yet"))
            continue
        costs = [float(getattr(t, cost)) for t in scored]
        front = _front(cfg, scored, costs, file, xlabel)
        note = f"red: the Pareto front, the best value for at most that cost ({', '.join(front)})"
        out.append(Plot(title, file, True, note))
    return out


def model_cost_plots(exp: Experiment, cfg: ReportConfig) -> list[Plot]:
    """Accuracy vs MACs and vs batch-1 latency of the full-budget trials, with a study's
    baselines where it recorded that cost."""
    # Full-budget trials only: a stopped trial's accuracy would put budget on the y axis. One
    # that diverged in its last epoch is no model at that cost (export leaves it out too).
    full = [
        t
        for t in ranked(exp.trials, cfg.metric, cfg.mode)
        if t.epochs >= exp.max_epochs and t.status != DIVERGED
    ]
    out = []
    for title, file, xlabel, key in (
        ("Accuracy vs MACs (Pareto front)", "pareto_macs.png", "MACs", "macs"),
        (
            "Accuracy vs latency (Pareto front)",
            "pareto_latency.png",
            "batch-1 latency (ms)",
            "latency_ms",
        ),
    ):
        if not full or not all(isinstance(t.history[-1].get(key), int | float) for t in full):
            why = (
                f"no trial that ran the full budget has a value of {cfg.metric}"
                if not full
                else f"no full-budget trial reported {key} (a search from before they were)"
            )
            out.append(_skipped(cfg, title, file, why))
            continue
        marked = {b.arm: (b.costs[key], b.value) for b in cfg.baselines if key in b.costs}
        costs = [float(t.history[-1][key]) for t in full]
        front = _front(cfg, full, costs, file, xlabel, marked)
        note = (
            f"full-budget trials; red: the Pareto front ({', '.join(front)}); "
            f"python -m ecab_tune.search --objectives {cfg.metric}:{cfg.mode},{key}:min "
            "exports its members to pareto/"
        )
        for b in cfg.baselines:
            note += (
                f"; star {b.arm}: the study's arm, mean over {b.seeds} seed(s) of each run's "
                f"best {cfg.metric} (its own recipe and budget)"
                if key in b.costs
                else f"; the study records no {key} of arm {b.arm}"
            )
        out.append(Plot(title, file, True, note))
    return out


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
    return Plot(title, file, True, f"trial {best.trial_id}, {epochs_text(best.epochs)}")


def draw_figures(exp: Experiment, cfg: ReportConfig) -> list[Plot]:
    return [
        plot_history(exp, cfg),
        plot_importances(exp, cfg),
        plot_importances(exp, cfg, every_trial=True),
        plot_curves(exp, cfg),
        plot_fusion_variants(exp, cfg),
        *training_cost_plots(exp, cfg),
        *model_cost_plots(exp, cfg),
        plot_best_curve(exp, cfg),
    ]
