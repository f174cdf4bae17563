"""The study's table (`ecab_tune.study.analysis.format_report`) from rows alone."""

from pathlib import Path

from study_support import write_study

from ecab_tune.study.analysis import format_report
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
