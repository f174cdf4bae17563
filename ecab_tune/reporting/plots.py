"""Figures of the study and the search report, drawn with matplotlib's Agg canvas (no pyplot)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

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


def attention_weights(weights: Mapping[str, Mapping[str, Sequence[float]]], path: Path) -> Path:
    """`weights`: variant → stage → every channel weight of that stage's gates (all images,
    modules and seeds); one panel of box plots per variant."""
    panels = {v: stages for v, stages in weights.items() if stages}
    fig = Figure(figsize=(max(4.0, 3.2 * len(panels)), 3.8), layout="constrained")
    if not panels:
        fig.text(0.5, 0.5, "no variant has channel attention", ha="center", va="center")
        return _save(fig, path)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (variant, stages) in zip(axes, panels.items(), strict=True):
        names = sorted(stages)
        ax.boxplot([stages[s] for s in names], showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), names)
        ax.set_title(variant)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("channel weight")
    fig.suptitle("Channel attention weights per stage (fixed test images, all seeds)")
    return _save(fig, path)


def optimisation_history(values: Sequence[float], mode: str, path: Path, *, ylabel: str) -> Path:
    """`values`: each trial's score in the order the trials started; with the running best."""
    steps = range(1, len(values) + 1)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(steps, values, "o", alpha=0.7, label="trial")
    best = list(itertools.accumulate(values, max if mode == "max" else min))
    ax.step(steps, best, where="post", color="tab:red", label="best so far")
    ax.set(xlabel="trial (in start order)", ylabel=ylabel, title="Optimisation history")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def horizontal_bars(values: Mapping[str, float], path: Path, *, title: str, xlabel: str) -> Path:
    """One bar per name, the first on top."""
    names = list(values)[::-1]
    fig = Figure(figsize=(6, max(2.5, 1.2 + 0.45 * len(names))), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(names, [values[n] for n in names])
    ax.set(xlabel=xlabel, title=title)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def _axis_positions(
    values: Sequence[Any], log: bool
) -> tuple[list[float], list[tuple[float, str]]]:
    """Each value's height on a [0, 1] axis, and the axis's (height, label) ticks."""
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


def pareto_front(costs: Sequence[float], values: Sequence[float], mode: str) -> list[int]:
    """Indices of the points that no cheaper-or-equal point beats, cheapest first."""
    sign = -1 if mode == "max" else 1
    front: list[int] = []
    for i in sorted(range(len(costs)), key=lambda i: (costs[i], sign * values[i])):
        if not front or sign * values[i] < sign * values[front[-1]]:
            front.append(i)
    return front


def cost_tradeoff(
    costs: Mapping[str, Sequence[float]],
    values: Sequence[float],
    labels: Sequence[str],
    mode: str,
    path: Path,
    *,
    ylabel: str,
) -> Path:
    """One panel per cost (x label → cost of each point), its Pareto front highlighted and
    labelled."""
    fig = Figure(figsize=(5 * len(costs), 4), layout="constrained")
    axes = fig.subplots(1, len(costs), sharey=True, squeeze=False)[0]
    for ax, (xlabel, cost) in zip(axes, costs.items(), strict=True):
        front = pareto_front(cost, values, mode)
        ax.plot(cost, values, "o", color="0.6", label="trial")
        ax.step(
            [cost[i] for i in front],
            [values[i] for i in front],
            "o-",
            where="post",
            color="tab:red",
            label="Pareto front",
        )
        for i in front:
            ax.annotate(
                labels[i], (cost[i], values[i]), xytext=(4, -10), textcoords="offset points"
            )
        ax.set(xlabel=xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[0].legend()
    fig.suptitle(f"{ylabel} vs cost")
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
