"""The study file's "done when" (`criteria`): what the report says met, not met or pending."""

import dataclasses
import re
from pathlib import Path

import pytest
from study_support import write_study

from ecab_tune.study.analysis import criteria_status, format_report
from ecab_tune.study.spec import Criteria, StudySpec, load_spec

CRITERIA = {
    "baseline_min_test_pct": 94.0,
    "max_ci_half_width_points": 0.35,
    "ci_arms": ["none", "se"],
    "convergence_max_gain_points": 0.3,
}


@pytest.fixture
def spec(tmp_path: Path) -> StudySpec:
    return load_spec(write_study(tmp_path, criteria=CRITERIA))  # 2 seeds; none, se, ecab


def row(arm: str, seed: int, acc: float, epochs: int = 1, group: str = "main") -> dict:
    return {"arm": arm, "seed": seed, "epochs": epochs, "group": group, "test_acc": acc}


def status(spec: StudySpec, rows: list[dict]) -> dict[str, tuple[str, str]]:
    """Each criterion by the arm or pair it names (or its whole text), to (now, verdict)."""
    out = {}
    for name, now, verdict in criteria_status(spec, rows):
        out[name.split("`")[1] if "`" in name else name] = (now, verdict)
    return out


def test_every_criterion_is_pending_until_its_seeds_have_finished(spec: StudySpec):
    got = status(spec, [row("none", 0, 0.95), row("ecab", 0, 0.96)])
    assert got["main runs, every arm at every seed"] == ("2 of 6", "pending")
    assert got["none"] == ("95.00 % (n=1)", "pending")
    assert got["ecab − none"] == ("fewer than 2 paired seeds", "pending")
    assert got["ecab − se"] == ("fewer than 2 paired seeds", "pending")
    assert got["doubling the epochs adds < 0.30 points"] == ("not run", "pending")


def test_met_and_not_met_once_every_seed_is_in(spec: StudySpec):
    # ecab − none: +1.0 and +1.0 points (no spread: a zero-width interval);
    # ecab − se: +1.0 and +3.0 points (t(1) makes that interval ±12.7 points).
    rows = [row("none", s, 0.94) for s in (0, 1)] + [row("ecab", s, 0.95) for s in (0, 1)]
    rows += [row("se", 0, 0.94), row("se", 1, 0.92), row("none", 0, 0.944, 2, "convergence")]
    got = status(spec, rows)
    assert got["main runs, every arm at every seed"] == ("6 of 6", "met")
    assert got["none"] == ("94.00 % (n=2)", "met")
    assert got["ecab − none"] == ("±0.00 points (n=2)", "met")
    assert got["ecab − se"] == ("±12.71 points (n=2)", "not met: add seeds")
    assert got["doubling the epochs adds < 0.30 points"] == ("seed 0: +0.40 points", "not met")

    below = [{**r, "test_acc": 0.93} if r["arm"] == "none" else r for r in rows]
    assert status(spec, below)["none"] == ("93.00 % (n=2)", "not met")
    close = [*rows[:-1], row("none", 0, 0.941, 2, "convergence")]
    assert status(spec, close)["doubling the epochs adds < 0.30 points"][1] == "met"


def test_the_report_has_the_table_only_where_the_file_has_criteria(spec: StudySpec):
    costs = {"params": 1, "macs": 1, "seconds": 1.0, "init_hash": "x", "device": "cpu"}
    rows = [{**row("none", 0, 0.95), **costs}]
    text = format_report(spec, rows)
    assert "## Done when" in text and "| `none` mean test accuracy ≥ 94.00 % |" in text
    assert "## Done when" not in format_report(dataclasses.replace(spec, criteria=Criteria()), rows)


@pytest.mark.parametrize("arm", ["ecab", "cbam"])
def test_criteria_name_only_the_focus_arms_rivals(arm: str, tmp_path: Path):
    with pytest.raises(ValueError, match=f"ci_arms: '{arm}' is not a main arm other than"):
        load_spec(write_study(tmp_path, criteria={**CRITERIA, "ci_arms": [arm]}))


def test_criteria_leave_run_identity_alone_and_follow_arms(spec: StudySpec):
    bare = dataclasses.replace(spec, criteria=Criteria())
    assert all(bare.run_key(job) == spec.run_key(job) for job in spec.jobs())
    assert spec.overridden(arms=["none"]).criteria.ci_arms == ("none",)


def test_an_unknown_criterion_is_named(tmp_path: Path):
    with pytest.raises(ValueError, match=r"unknown Criteria key.*min_acc"):
        load_spec(write_study(tmp_path, criteria={**CRITERIA, "min_acc": 90}))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"baseline_min_test_pct": "high"}, "baseline_min_test_pct='high' must be a positive"),
        ({"max_ci_half_width_points": -0.35}, "max_ci_half_width_points=-0.35 must be a positive"),
        ({"max_ci_half_width_points": None}, "ci_arms needs max_ci_half_width_points"),
    ],
)
def test_a_criterion_that_cannot_be_judged_is_refused(change: dict, words: str, tmp_path: Path):
    with pytest.raises(ValueError, match=re.escape(words)):
        load_spec(write_study(tmp_path, criteria={**CRITERIA, **change}))


def test_one_seed_has_no_interval_to_meet_the_width_once_every_run_is_in(spec: StudySpec):
    # `--seeds 1`: every run in, and no interval can ever be computed: not "pending" forever.
    one = spec.overridden(seeds=1)
    got = status(one, [row("none", 0, 0.95), row("se", 0, 0.95), row("ecab", 0, 0.96)])
    assert got["main runs, every arm at every seed"] == ("3 of 3", "met")
    assert got["ecab − none"] == ("fewer than 2 paired seeds", "not met: add seeds")
    assert status(one, [row("none", 0, 0.95)])["ecab − none"][1] == "pending"
