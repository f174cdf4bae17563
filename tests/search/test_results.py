import math
from types import SimpleNamespace

import pandas as pd

from ecab_tune.search.results import TrialRow, format_table, rank, summarize, tally, trial_table


def row(trial_id, best, status="finished", **params):
    return TrialRow(trial_id, best, epochs=3, time_s=12.4, status=status, params=params)


def test_rows_rank_best_first_and_trials_without_a_value_last():
    rows = [row("a", 0.7), row("b", math.nan), row("c", 0.9), row("d", 0.7)]
    assert [r.trial_id for r in rank(rows, "max")] == ["c", "a", "d", "b"]
    assert [r.trial_id for r in rank(rows, "min")] == ["a", "d", "c", "b"]


def test_one_table_for_the_terminal_and_the_report():
    header, cells = trial_table([row("c", 0.9, lr=0.05), row("a", 0.7123456, lr=0.3)], "val_acc")
    assert header == ("#", "trial", "val_acc", "epochs", "time", "status", "params")
    assert cells[1] == ("2", "a", "0.7123", "3", "12s", "finished", "lr=0.3")
    _, [pending] = trial_table([row("p", math.nan, status="pending")], "val_acc")
    assert pending[2:] == ("nan", "3", "12s", "pending", "-")  # not "none", an attention name
    text = format_table([row(str(k), 0.5) for k in range(12)], "val_acc", limit=10)
    lines = text.splitlines()
    assert len(lines) == 1 + 10 + 1 and lines[-1] == "... and 2 more in summary.json"
    assert len({len(line) for line in lines[1:-1]}) == 1  # aligned columns


def test_summary_rows_keep_their_keys_and_the_tally_counts_trials_not_yet_created():
    assert row("a", 0.5, lr=0.1).to_dict("val_acc") == {
        "trial_id": "a", "val_acc": 0.5, "epochs": 3, "time_s": 12.4, "status": "finished",
        "params": {"lr": 0.1},
    }  # fmt: skip
    rows = [row("a", 0.5), row("b", 0.4, status="stopped early")]
    assert tally(rows, num_samples=4) == "1 finished, 1 stopped early, 2 pending"


def test_whole_number_objectives_rank_like_any_other():
    # macs and num_params are reported as ints: they were once dropped, and every trial was nan.
    grid = [
        SimpleNamespace(
            path=f"/runs/x/trial_{name}",
            metrics_dataframe=pd.DataFrame({"macs": [macs, macs], "val_acc": [0.5, 0.6]}),
            metrics={"training_iteration": 2, "done": True},
            config={},
            error=None,
        )
        for name, macs in (("big", 20_000_000), ("small", 9_000_000))
    ]
    rows = summarize(grid, "macs", "min", max_epochs=2)
    assert [(r.trial_id, r.best) for r in rows] == [("small", 9_000_000), ("big", 20_000_000)]
    assert [cells[2] for cells in trial_table(rows, "macs")[1]] == ["9,000,000", "20,000,000"]
