"""Summaries over seeds: mean ± std, paired t-tests of differences (scipy's t distribution),
and Holm's adjustment over a family of paired contrasts."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the std is nan for a single value."""
    if not values:
        raise ValueError("mean_std of no values")
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return statistics.fmean(values), std


@dataclass(frozen=True)
class Contrast:
    """A paired comparison a − b over seeds: mean difference, its spread, and a t-test."""

    name: str
    diffs: tuple[float, ...]
    mean: float
    sd: float
    low: float  # 95% CI
    high: float
    p: float
    p_holm: float = math.nan
    adj_low: float = math.nan  # CI at the level Holm's step tested this contrast at
    adj_high: float = math.nan

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def paired_contrast(name: str, a: Sequence[float], b: Sequence[float]) -> Contrast:
    """Paired t-test of mean(a - b) over two or more pairs: 95% interval and p-value."""
    if len(a) != len(b):
        raise ValueError(f"{name}: paired samples differ in length: {len(a)} and {len(b)}")
    if len(a) < 2:
        raise ValueError(f"{name}: a paired test needs two or more pairs, got {len(a)}")
    if not all(math.isfinite(x) for x in (*a, *b)):
        raise ValueError(f"{name}: a value is not a finite number: {list(a)} and {list(b)}")
    # Accuracies are counts over a test set: equal differences must be equal, not 1e-17 apart,
    # or float noise decides between a zero spread and a tiny one (p = 0 either way, below).
    diffs = tuple(round(x - y, 12) for x, y in zip(a, b, strict=True))
    mean, sd = mean_std(diffs)
    df, se = len(diffs) - 1, sd / math.sqrt(len(diffs))
    half = float(stats.t.ppf(0.975, df)) * se
    # No spread: scipy's limits, t = 0/0 (no difference: p = 1) or ±inf (the same one: p = 0).
    p = float(2 * stats.t.sf(abs(mean) / se, df)) if se > 0 else float(mean == 0)
    return Contrast(name, diffs, mean, sd, mean - half, mean + half, p)


def holm(
    contrasts: Sequence[Contrast], alpha: float = 0.05, family: int | None = None
) -> list[Contrast]:
    """Holm's step-down adjustment over one family: adjusted p-values (monotone), and each
    contrast's interval at the level its step tests it (1 − alpha / (m − rank)), which excludes
    0 exactly when Holm rejects it. Holm stops at the first contrast it retains: that one and
    every one after it keep that step's level, so their intervals include 0 as well (a later
    step's wider level would exclude 0 for a contrast Holm never rejects).

    `family`: the planned family's size when some of its contrasts cannot be estimated yet (a
    study partway). Those count as p = 1, a valid p-value (never rejected), so they rank last and
    the estimated ones take the largest multipliers: an interim table controls the error rate
    of the planned family, not only of the contrasts estimated so far."""
    m = len(contrasts) if family is None else family
    if m < len(contrasts):
        raise ValueError(f"a family of {m} cannot hold {len(contrasts)} contrasts")
    order = sorted(range(len(contrasts)), key=lambda i: contrasts[i].p)
    adjusted: dict[int, Contrast] = {}
    running, stopped = 0.0, False
    for rank, i in enumerate(order):
        c = contrasts[i]
        running = max(running, min(1.0, (m - rank) * c.p))
        if not stopped:
            level = alpha / (m - rank)
            stopped = running >= alpha
        n = len(c.diffs)
        half = float(stats.t.ppf(1 - level / 2, n - 1)) * c.sd / math.sqrt(n)
        adjusted[i] = dataclasses.replace(
            c, p_holm=running, adj_low=c.mean - half, adj_high=c.mean + half
        )
    return [adjusted[i] for i in range(len(contrasts))]
