"""A study's plain and SE arms as the report's reference points
(`ecab_tune.reporting.baselines`), read from the committed pilot study."""

import json
import statistics
from pathlib import Path

import pytest

from ecab_tune.reporting.baselines import StudyError, load_baselines

PILOT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "fmnist-resnet20-pilot30"


def pilot_rows(arm: str) -> list[dict]:
    rows = [json.loads(line) for line in (PILOT / "runs.jsonl").read_text().splitlines()]
    return [r for r in rows if r["arm"] == arm and r["group"] == "main"]


@pytest.mark.parametrize("where", [PILOT, PILOT / "runs.jsonl"])
def test_the_plain_and_se_arms_of_the_main_comparison(where):
    baselines = load_baselines(where, "test_acc", "max")
    assert [b.arm for b in baselines] == ["none", "se"]  # not eca, ecab_head, convergence
    none = baselines[0]
    assert none.seeds == 2 and none.costs["macs"] == 31_021_952 and "latency_ms" not in none.costs
    assert none.value == pytest.approx(statistics.fmean(r["test_acc"] for r in pilot_rows("none")))


def test_a_per_epoch_curve_counts_by_its_best_epoch():
    se = load_baselines(PILOT, "val_acc", "max")[1]
    assert se.value == pytest.approx(statistics.fmean(max(r["val_acc"]) for r in pilot_rows("se")))


def test_a_metric_the_study_never_recorded_is_an_error_listing_what_it_did(tmp_path):
    with pytest.raises(StudyError, match=r"record no val_loss; they record: .*test_acc"):
        load_baselines(PILOT, "val_loss", "min")
    (tmp_path / "runs.jsonl").write_text(json.dumps(pilot_rows("none")[0] | {"arm": "x"}) + "\n")
    assert [b.arm for b in load_baselines(tmp_path, "test_acc", "max")] == ["x"]
    (tmp_path / "runs.jsonl").write_text(json.dumps(pilot_rows("none")[0] | {"attention": "eca"}))
    with pytest.raises(StudyError, match="no completed run of a none or se arm"):
        load_baselines(tmp_path, "test_acc", "max")
