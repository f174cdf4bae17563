"""The study's table (`ecab_tune.study.analysis.format_report`) from rows alone."""

from pathlib import Path

import pytest
from study_support import write_study

from ecab_tune.reporting.stats import paired_contrast
from ecab_tune.study.analysis import format_report, main_family
from ecab_tune.study.spec import load_spec


def row(arm: str, seed: int, device: str, seconds: float) -> dict:
    return {
        "arm": arm, "seed": seed, "epochs": 1, "group": "main", "test_acc": 0.9, "params": 1,
        "macs": 1e6, "seconds": seconds, "init_hash": f"h{seed}", "device": device,
    }  # fmt: skip


def test_seconds_a_run_are_averaged_per_device(tmp_path: Path):
    spec = load_spec(write_study(tmp_path))
    rows = [row("none", 0, "NVIDIA H200", 500.0), row("none", 1, "cpu", 12000.0)]
    rows += [row("se", 0, "cpu", 9000.0), row("se", 1, "cpu", 11000.0)]
    cells = {
        line.split(" | ")[0].strip("| "): line.rsplit(" | ", 1)[1].strip(" |")
        for line in format_report(spec, rows).splitlines()
        if line.startswith(("| none ", "| se "))
    }
    assert cells == {"none": "500 (NVIDIA H200); 12,000 (cpu)", "se": "10,000"}


def test_a_study_partway_is_holm_adjusted_over_its_planned_family(tmp_path: Path):
    # 3 planned contrasts (se − none, ecab − none, ecab − se); only se − none has 2 paired
    # seeds. Adjusting over the 1 estimated would be Holm over a family of one: unadjusted.
    spec = load_spec(write_study(tmp_path))
    rows = [row("none", 0, "cpu", 1.0), row("none", 1, "cpu", 1.0)]
    rows += [row("se", 0, "cpu", 1.0), row("se", 1, "cpu", 1.0), row("ecab", 0, "cpu", 1.0)]
    for r, acc in zip(rows, (0.900, 0.910, 0.905, 0.912, 0.93), strict=True):
        r["test_acc"] = acc
    p = paired_contrast("se − none", [0.905, 0.912], [0.900, 0.910]).p
    (se_none,) = main_family(spec, rows)
    assert se_none.p_holm == pytest.approx(min(1.0, 3 * p))
    report = format_report(spec, rows)
    assert f"p={se_none.p_holm:.3f}" in report
    assert "the 3 planned contrasts form one family (1 estimable so far" in report


def test_the_report_says_when_a_seed_s_pairs_were_trained_on_different_devices(tmp_path: Path):
    spec = load_spec(write_study(tmp_path))
    rows = [row("none", 0, "NVIDIA H200", 1.0), row("se", 0, "NVIDIA H200", 1.0)]
    rows += [row("none", 1, "cpu", 1.0)]
    assert "Devices: each seed's runs on one device." in format_report(spec, rows)
    rows.append(row("se", 1, "NVIDIA H200 + cpu", 1.0))  # resumed on another machine
    assert "Devices: MIXED within a seed (seed 1: NVIDIA H200 + cpu, cpu)" in format_report(
        spec, rows
    )


def test_the_report_names_a_diverged_run_it_counts(tmp_path: Path):
    # A diverged run is a result (its final model's accuracy, near chance): it enters the mean
    # and the paired differences, and the report says which run it is.
    spec = load_spec(write_study(tmp_path))
    rows = [row("none", s, "cpu", 1.0) for s in (0, 1)] + [row("se", 0, "cpu", 1.0)]
    assert "iverged" not in format_report(spec, rows)
    rows.append({**row("se", 1, "cpu", 1.0), "status": "diverged", "test_acc": 0.1,
                 "val_acc": [0.1]})  # fmt: skip
    report = format_report(spec, rows)
    assert "| se | 2 | 50.00 ± 56.57 |" in report
    assert "Diverged (counted: its final model's test accuracy): `se` seed 1 (epoch 1 of 1)." in (
        report
    )


def test_a_difference_over_fewer_seeds_than_an_arm_has_says_how_many_pairs(tmp_path: Path):
    # none has seeds 0-2, se only 0-1: Δ pairs 2 seeds, so it is not none's mean (3 seeds)
    # subtracted from se's; the cell says so. Once se has seed 2, it says nothing.
    spec = load_spec(write_study(tmp_path, seeds=3))
    rows = [row("none", s, "cpu", 1.0) for s in range(3)] + [row("se", 0, "cpu", 1.0)]
    rows.append({**row("se", 1, "cpu", 1.0), "test_acc": 0.91})
    (se_line,) = [x for x in format_report(spec, rows).splitlines() if x.startswith("| se ")]
    assert se_line.startswith("| se | 2 | 90.50 ± 0.71 | +0.50 [") and "(2 pairs) |" in se_line
    rows.append(row("se", 2, "cpu", 1.0))
    assert "pairs)" not in format_report(spec, rows)
