"""Summaries over seeds (`ecab_tune.reporting.stats`): the paired t-test against the hand
computation and scipy's `ttest_rel`, Holm's adjustment."""

import dataclasses
import math

import pytest
from scipy import stats

from ecab_tune.reporting.stats import holm, mean_std, paired_contrast

# Three seeds; differences 0.02, 0.01, 0.03: mean 0.02, sd 0.01, t(0.975, 2) = 4.302653.
WITH = [0.80, 0.82, 0.85]
WITHOUT = [0.78, 0.81, 0.82]
HALF_WIDTH = 4.302653 * 0.01 / math.sqrt(3)


def test_paired_contrast_matches_the_hand_computation():
    c = paired_contrast("with − without", WITH, WITHOUT)
    assert c.diffs == pytest.approx((0.02, 0.01, 0.03)) and c.mean == pytest.approx(0.02)
    assert c.sd == pytest.approx(0.01) and c.half_width == pytest.approx(HALF_WIDTH, abs=1e-6)
    assert (c.low, c.high) == pytest.approx((0.02 - HALF_WIDTH, 0.02 + HALF_WIDTH), abs=1e-6)


def test_paired_contrast_matches_scipy_ttest_rel():
    a, b = [0.91, 0.88, 0.93, 0.90, 0.87], [0.89, 0.88, 0.90, 0.86, 0.88]
    c, reference = paired_contrast("a − b", a, b), stats.ttest_rel(a, b)
    interval = reference.confidence_interval(0.95)
    assert (c.low, c.high) == pytest.approx((interval.low, interval.high))
    assert c.p == pytest.approx(reference.pvalue)
    assert paired_contrast("same", a, a).p == 1.0  # no spread: no evidence, not a nan


def test_the_same_difference_at_every_seed_is_the_same_whatever_the_float_rounding():
    # +0.14 points at both seeds; as floats, one pair differs by 0 and the other by 8e-17.
    exact = paired_contrast("x", [0.9481, 0.9472], [0.9467, 0.9458])
    noisy = paired_contrast("x", [0.9481, 0.9475], [0.9467, 0.9461])
    for c in (exact, noisy):
        assert c.sd == 0 and c.p == 0.0  # scipy's ttest_rel: t = inf, p = 0
        assert c.low == c.high == pytest.approx(0.0014)
    assert exact.p == stats.ttest_rel([0.9481, 0.9472], [0.9467, 0.9458]).pvalue


def test_one_seed_gives_no_contrast_and_no_std():
    mean, std = mean_std([0.9])
    assert mean == 0.9 and math.isnan(std)
    with pytest.raises(ValueError, match="two or more pairs, got 1"):
        paired_contrast("x", [0.9], [0.8])
    with pytest.raises(ValueError, match="differ in length"):
        paired_contrast("x", [0.9, 0.8], [0.8])


def test_holm_matches_the_hand_computation():
    c = paired_contrast("a − b", [0.91, 0.88, 0.93, 0.90, 0.87], [0.89, 0.88, 0.90, 0.86, 0.88])
    # Holm on p = (0.01, 0.04, 0.03): sorted 0.01·3 = 0.03, 0.03·2 = 0.06, max(0.06, 0.04·1).
    family = [
        c.__class__(str(p), c.diffs, c.mean, c.sd, c.low, c.high, p) for p in (0.01, 0.04, 0.03)
    ]
    assert [x.p_holm for x in holm(family)] == pytest.approx([0.03, 0.06, 0.06])
    first = holm(family)[0]  # tested at alpha / 3: wider than the unadjusted interval
    assert first.adj_low < first.low and first.adj_high > first.high


def test_holm_over_a_planned_family_counts_the_missing_contrasts_as_p_1():
    c = paired_contrast("a − b", [0.91, 0.88, 0.93], [0.89, 0.88, 0.90])
    family = [dataclasses.replace(c, name=str(p), p=p) for p in (0.01, 0.04, 0.03)]
    # Planned 5, estimated 3: sorted 0.01·5 = 0.05, 0.03·4 = 0.12, max(0.12, 0.04·3) = 0.12.
    planned = holm(family, family=5)
    assert [x.p_holm for x in planned] == pytest.approx([0.05, 0.12, 0.12])
    # Tested at alpha / 5, not alpha / 3: the interval widens with the planned family.
    assert planned[0].adj_low < holm(family)[0].adj_low
    with pytest.raises(ValueError, match="a family of 2 cannot hold 3"):
        holm(family, family=2)


def test_a_value_that_is_no_finite_number_is_named_with_its_contrast():
    with pytest.raises(ValueError, match="ecab − none: a value is not a finite number"):
        paired_contrast("ecab − none", [0.9, float("nan")], [0.8, 0.7])


def test_a_holm_interval_excludes_0_only_where_holm_rejects():
    # Differences (+24 ± 2k) and (+21 ± 2k) in 1e-4 over 5 seeds: p = 0.027 and 0.041. Holm
    # over 2: 2·0.027 > 0.05 retains the first, and so stops: the second is retained too,
    # though its own p < 0.05. Its interval must include 0, not be the plain 95% one.
    b = [0.90] * 5
    first, second = (
        paired_contrast(name, [0.90 + (mu + d) / 1e4 for d in (-20, -10, 0, 10, 20)], b)
        for name, mu in (("first", 24), ("second", 21))
    )
    assert 0.025 < first.p < second.p < 0.05
    for c in holm([first, second]):
        assert c.p_holm >= 0.05
        assert c.adj_low <= 0 <= c.adj_high, c.name
