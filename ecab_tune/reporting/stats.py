"""Summaries over seeds: mean ± std, paired t-test intervals of differences, and Holm's
adjustment over a family of paired contrasts."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# Two-sided 95% critical values of Student's t for 1..30 degrees of freedom (textbook table).
T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
Z975 = 1.959964  # the normal quantile the t quantile tends to


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the std is nan for a single value."""
    if not values:
        raise ValueError("mean_std of no values")
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return statistics.fmean(values), std


def approx_t975(df: int) -> float:
    """t quantile without scipy: the table up to 30 df, then the Cornish-Fisher expansion
    around the normal quantile (within 0.01% of the exact value beyond 30 df)."""
    if df < 1:
        raise ValueError(f"df={df} is invalid: expected >= 1")
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t975(df: int) -> tuple[float, str]:
    """The two-sided 95% t critical value and where it came from ("scipy" or "table")."""
    try:
        from scipy import stats  # an optional dependency: heavy to import, absent in slim installs
    except ImportError:
        return approx_t975(df), "table"
    return float(stats.t.ppf(0.975, df)), "scipy"


@dataclass(frozen=True)
class PairedDiff:
    """Mean of the paired differences a - b with its 95% confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    t_source: str  # "scipy" or "table": how the t quantile was obtained

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_ci(a: Sequence[float], b: Sequence[float]) -> PairedDiff | None:
    """Paired t-test interval of mean(a - b); None with fewer than two pairs (no spread)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    if len(a) < 2:
        return None
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean, std = mean_std(diffs)
    t, source = t975(len(diffs) - 1)
    half = t * std / math.sqrt(len(diffs))
    return PairedDiff(mean, mean - half, mean + half, len(diffs), source)


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
    """`paired_ci`'s interval with the paired t-test's p-value; needs two or more pairs."""
    from scipy import stats  # needed for p-values; the study's analysis always has it

    ci = paired_ci(a, b)
    if ci is None:
        raise ValueError(f"{name}: a paired test needs two or more pairs, got {len(a)}")
    diffs = tuple(x - y for x, y in zip(a, b, strict=True))
    sd = mean_std(diffs)[1]
    se = sd / math.sqrt(len(diffs))
    p = 1.0 if se == 0 else float(2 * stats.t.sf(abs(ci.mean) / se, len(diffs) - 1))
    return Contrast(name, diffs, ci.mean, sd, ci.low, ci.high, p)


def holm(
    contrasts: Sequence[Contrast], alpha: float = 0.05, family: int | None = None
) -> list[Contrast]:
    """Holm's step-down adjustment over one family: adjusted p-values (monotone), and each
    contrast's interval at the level its step tests it (1 − alpha / (m − rank)), which excludes
    0 exactly when Holm rejects it, as long as the steps before it rejected too.

    `family`: the planned family's size when some of its contrasts cannot be estimated yet (a
    study partway). Those count as p = 1, a valid p-value (never rejected), so they rank last and
    the estimated ones take the largest multipliers: an interim table controls the error rate
    of the planned family, not only of the contrasts estimated so far."""
    from scipy import stats

    m = len(contrasts) if family is None else family
    if m < len(contrasts):
        raise ValueError(f"a family of {m} cannot hold {len(contrasts)} contrasts")
    order = sorted(range(len(contrasts)), key=lambda i: contrasts[i].p)
    adjusted: dict[int, Contrast] = {}
    running = 0.0
    for rank, i in enumerate(order):
        c = contrasts[i]
        running = max(running, min(1.0, (m - rank) * c.p))
        level = alpha / (m - rank)
        n = len(c.diffs)
        half = float(stats.t.ppf(1 - level / 2, n - 1)) * c.sd / math.sqrt(n)
        adjusted[i] = dataclasses.replace(
            c, p_holm=running, adj_low=c.mean - half, adj_high=c.mean + half
        )
    return [adjusted[i] for i in range(len(contrasts))]
