"""The figures of the study and of the search report, as PNG files.

Where `optuna.visualization.matplotlib` draws a figure (optimisation history, parameter
importances, intermediate values, Pareto front), the report uses it on a study from
`optuna_studies`; plotly, which `optuna.visualization` needs, is not a dependency. The rest is
drawn here on matplotlib's Agg canvas without pyplot: the study's accuracy vs parameters,
learning curves and paired differences, and the report's parallel coordinates (dashed lines for
trials that ran short, which Optuna's has no way to show) and train-vs-validation curves.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ecab_tune.reporting.optuna_studies import LABEL, pareto_front

DPI = 120


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path


def accuracy_vs_params(points: Mapping[str, tuple[int, float, float]], path: Path) -> Path:
    """`points`: variant → (parameters, mean test accuracy, std over seeds)."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for variant, (params, mean, std) in points.items():
        # One seed has no spread: draw the point without an error bar.
        ax.errorbar(
            params,
            100 * mean,
            yerr=0 if math.isnan(std) else 100 * std,
            fmt="o",
            capsize=4,
        )
        ax.annotate(variant, (params, 100 * mean), textcoords="offset points", xytext=(6, 4))
    ax.set(
        xlabel="parameters",
        ylabel="test accuracy (%)",
        title="Test accuracy vs parameters (mean ± std over seeds)",
    )
    ax.grid(alpha=0.3)
    return _save(fig, path)


def learning_curves(curves: Mapping[str, Sequence[float]], path: Path) -> Path:
    """`curves`: variant → mean validation accuracy after each epoch."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for variant, accs in curves.items():
        ax.plot(range(1, len(accs) + 1), [100 * a for a in accs], marker="o", label=variant)
    ax.set(
        xlabel="epoch", ylabel="validation accuracy (%)", title="Learning curves (mean over seeds)"
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


NOT_DRAWN = "n/a"


def _axis_positions(
    values: Sequence[Any], log: bool
) -> tuple[list[float], list[tuple[float, str]]]:
    """Each value's height on a [0, 1] axis, and the axis's (height, label) ticks; None (a
    conditional option the row did not draw) sits at the top, as "n/a"."""
    if any(v is None for v in values):
        present = [v for v in values if v is not None]
        if not present:
            return [0.5] * len(values), [(0.5, NOT_DRAWN)]
        heights, ticks = _axis_positions(present, log)
        below = iter(0.85 * h for h in heights)
        return (
            [1.0 if v is None else next(below) for v in values],
            [(0.85 * h, text) for h, text in ticks] + [(1.0, NOT_DRAWN)],
        )
    if any(isinstance(v, (str, bool)) for v in values):
        categories = sorted({str(v) for v in values})
        step = 1 / (len(categories) - 1) if len(categories) > 1 else 0.0
        where = {c: i * step if step else 0.5 for i, c in enumerate(categories)}
        return [where[str(v)] for v in values], [(where[c], c) for c in categories]
    scaled = [math.log10(v) if log else float(v) for v in values]
    low, high = min(scaled), max(scaled)
    if high == low:  # one value: mid-axis
        return [0.5] * len(values), [(0.5, f"{min(values):.3g}")]
    ticks = [(0.0, f"{min(values):.3g}"), (1.0, f"{max(values):.3g}")]
    return [(s - low) / (high - low) for s in scaled], ticks


def parallel_coordinates(
    columns: Mapping[str, Sequence[Any]],
    colour: Sequence[float],
    path: Path,
    *,
    colour_label: str,
    title: str,
    log_axes: Collection[str] = (),
    dashed: Sequence[bool] = (),
    cmap: str = "viridis",
) -> Path:
    """One line per row across one vertical axis per column, coloured by `colour`: text and bool
    columns are evenly spaced categories, numbers run min → max (log-scaled for `log_axes`).
    Rows are drawn in order, so put the ones to see on top last."""
    names = list(columns)
    axes = {n: _axis_positions(columns[n], n in log_axes) for n in names}
    norm, colours = Normalize(min(colour), max(colour)), colormaps[cmap]
    fig = Figure(figsize=(max(5.0, 2.0 * len(names) + 1.5), 4.2), layout="constrained")
    ax = fig.add_subplot()
    for row, value in enumerate(colour):
        ax.plot(
            range(len(names)),
            [axes[n][0][row] for n in names],
            color=colours(norm(value)),
            linestyle="--" if dashed and dashed[row] else "-",
            marker="o",
            alpha=0.85,
        )
    for x, name in enumerate(names):
        ax.axvline(x, color="0.5", linewidth=1, zorder=0)
        for height, text in axes[name][1]:
            ax.annotate(text, (x, height), xytext=(5, 0), textcoords="offset points", va="center")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks([])
    ax.set_xlim(-0.15, len(names) - 0.4)
    ax.set_ylim(-0.08, 1.08)
    ax.set_title(title)
    fig.colorbar(ScalarMappable(norm, colours), ax=ax, label=colour_label)
    return _save(fig, path)


def epoch_curves(
    epochs: Sequence[int],
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    path: Path,
    *,
    title: str,
) -> Path:
    """One panel per quantity (e.g. accuracy, loss), one line per series (e.g. train, val)."""
    fig = Figure(figsize=(5 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (quantity, series) in zip(axes, panels.items(), strict=True):
        for name, ys in series.items():
            ax.plot(epochs, ys, marker="o", label=name)
        ax.set(xlabel="epoch", ylabel=quantity)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def paired_differences(contrasts: Sequence[Any], path: Path) -> Path:
    """Per contrast: each seed's paired difference (dots), the mean and its 95% CI (bar), and
    the Holm-adjusted interval (thin bar), in accuracy points."""
    fig = Figure(figsize=(7, 0.45 * len(contrasts) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    for y, c in enumerate(contrasts):
        ax.plot([100 * d for d in c.diffs], [y] * len(c.diffs), "o", color="0.6", ms=4)
        ax.plot([100 * c.adj_low, 100 * c.adj_high], [y, y], color="C0", lw=1)
        ax.errorbar(
            100 * c.mean,
            y,
            xerr=[[100 * (c.mean - c.low)], [100 * (c.high - c.mean)]],
            fmt="s",
            color="C3" if c.p_holm < 0.05 else "C0",
            capsize=4,
            lw=2.5,
        )
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(contrasts)), [c.name for c in contrasts])
    ax.invert_yaxis()
    ax.set(
        xlabel="paired difference in test accuracy (points)",
        title="Per-seed differences (dots), mean with 95% CI (thick), Holm-adjusted (thin)",
    )
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


# ---------------------------------------------------------------- drawn by Optuna
def _save_optuna(draw: Callable[[], Any], path: Path) -> Path:
    """Save the axes `draw` returns from an `optuna.visualization.matplotlib` function: the
    ggplot style it sets on pyplot's global rcParams stays inside, its experimental-API warning
    is not printed, and the figure is closed (pyplot would keep it open)."""
    import matplotlib
    import optuna
    from matplotlib import pyplot as plt

    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fig = draw().get_figure()
        try:
            fig.savefig(path, dpi=DPI, bbox_inches="tight")
        finally:
            plt.close(fig)
    return path


def optimisation_history(study: Any, path: Path, *, ylabel: str) -> Path:
    """Each trial's value in the order the study holds them, with the best so far."""
    from optuna.visualization.matplotlib import plot_optimization_history

    def draw() -> Any:
        ax = plot_optimization_history(study, target_name=ylabel)
        ax.set_xlabel("trial (in start order)")
        return ax

    return _save_optuna(draw, path)


def param_importances(
    study: Any, evaluator: Any, path: Path, *, target_name: str, title: str
) -> Path:
    """One bar per parameter, by `evaluator` (the one that computed the report's numbers)."""
    from optuna.visualization.matplotlib import plot_param_importances

    def draw() -> Any:
        ax = plot_param_importances(study, evaluator=evaluator, target_name=target_name)
        ax.set_title(title, loc="left")  # Optuna's own, replaced: the report draws two
        return ax

    return _save_optuna(draw, path)


def intermediate_values(study: Any, path: Path, *, ylabel: str) -> Path:
    """One line per trial over its epochs, labelled with the trial's label."""
    from optuna.visualization.matplotlib import plot_intermediate_values

    def draw() -> Any:
        ax = plot_intermediate_values(study)
        labels = [t.user_attrs[LABEL] for t in study.get_trials(deepcopy=False)]
        for line, label in zip(ax.get_lines(), labels, strict=True):
            line.set_label(label)
        if ax.get_legend() is not None:  # Optuna's shows trial numbers
            ax.legend(bbox_to_anchor=(1.05, 1), loc="upper left", borderaxespad=0.0)
        ax.set(xlabel="epoch", ylabel=ylabel, title="Learning curves of every trial")
        return ax

    return _save_optuna(draw, path)


def cost_front(
    study: Any,
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    references: Mapping[str, tuple[float, float]] | None = None,
) -> list[str]:
    """A tradeoff study's points (cost, value) with its Pareto front, the front's labels
    written beside its points; `references`: name → (cost, value), drawn as stars. Returns the
    front's labels, cheapest first."""
    from optuna.visualization.matplotlib import plot_pareto_front

    trials = study.get_trials(deepcopy=False)
    front = [trials[n] for n in pareto_front(study)]
    references = references or {}

    def draw() -> Any:
        ax = plot_pareto_front(study, target_names=[xlabel, ylabel])
        for t in front:
            ax.annotate(t.user_attrs[LABEL], t.values, xytext=(4, -10), textcoords="offset points")
        for k, (name, (cost, value)) in enumerate(references.items()):
            label = "study arm" if k == 0 else None
            ax.scatter([cost], [value], marker="*", s=160, color="black", zorder=3, label=label)
            # Arms of one model cost the same: their names stacked, not overprinted.
            ax.annotate(name, (cost, value), xytext=(8, 4 - 12 * k), textcoords="offset points")
        if references:
            ax.legend()
        costs = [t.values[0] for t in trials] + [c for c, _ in references.values()]
        if min(costs) > 0 and max(costs) > 10 * min(costs):  # e.g. a study's bigger model
            ax.set_xscale("log")
        ax.set_title(f"{ylabel} vs {xlabel}")
        return ax

    _save_optuna(draw, path)
    return [t.user_attrs[LABEL] for t in front]
