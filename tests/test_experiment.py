"""The experiment folder (`ecab_tune.experiment`): the one reader of a trial's results, and how
a trial's end reads in the status vocabulary."""

import json

import pytest

from ecab_tune import experiment
from ecab_tune.experiment import RESULT_FILE, read_results, trial_folders


def test_results_skip_lines_cut_short_and_count_them(tmp_path):
    folder = tmp_path / "trial_a1"
    folder.mkdir()
    rows = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.6}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (folder / RESULT_FILE).write_text(text + "\n" + '[1, 2]\n{"epoch": 3, "val_a')
    read = read_results(folder)
    assert read.rows == rows  # in the order written; the blank line is not a result
    assert read.unreadable == 2  # a line that is not a result, and one a kill cut short


def test_a_trial_that_has_not_reported_yet_has_no_results(tmp_path):
    assert read_results(tmp_path / "trial_new") == experiment.TrialResults([], 0)


def test_trial_folders_are_the_trial_prefixed_folders_in_name_order(tmp_path):
    for name in ("trial_b", "trial_a", "best", "pareto"):
        (tmp_path / name).mkdir()
    (tmp_path / "trial_file").write_text("")
    assert [p.name for p in trial_folders(tmp_path)] == ["trial_a", "trial_b"]


@pytest.mark.parametrize(
    "state,epochs,diverged,ended,status",
    [
        ("TERMINATED", 3, False, True, experiment.FINISHED),
        ("TERMINATED", 1, False, True, experiment.STOPPED),
        ("TERMINATED", 2, True, True, experiment.DIVERGED),
        ("ERROR", 1, False, True, experiment.ERRORED),
        ("PENDING", 0, False, True, experiment.PENDING),
        ("RUNNING", 1, False, True, experiment.INTERRUPTED),
        ("RUNNING", 1, False, False, experiment.RUNNING),
    ],
)
def test_tune_states_in_our_words(state, epochs, diverged, ended, status):
    got = experiment.tune_status(state, epochs, 3, diverged=diverged, search_ended=ended)
    assert got == status and got in experiment.STATUSES
