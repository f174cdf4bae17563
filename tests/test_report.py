"""`python -m ecab_tune.report`: errors at the command line, in the user's terms."""

import pytest
from report_support import TRIALS, make_experiment

from ecab_tune.report import main


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_no_experiment_exits_2_naming_the_folder(tmp_path, capsys, kind):
    folder = tmp_path / kind
    if kind == "empty":
        folder.mkdir()
    with pytest.raises(SystemExit) as exit_:
        main([str(folder)])
    assert exit_.value.code == 2
    assert str(folder) in capsys.readouterr().err


def test_unknown_metric_exits_2_listing_the_reported_ones(tmp_path, capsys):
    exp = make_experiment(tmp_path, {"a1": TRIALS["a1"]})
    with pytest.raises(SystemExit) as exit_:
        main([str(exp), "--metric", "val_accuracy"])
    assert exit_.value.code == 2
    assert "val_acc" in capsys.readouterr().err


def test_a_study_folder_without_runs_exits_2_naming_what_was_expected(tmp_path, capsys):
    exp = make_experiment(tmp_path, {"a1": TRIALS["a1"]})
    with pytest.raises(SystemExit) as exit_:
        main([str(exp), "--study", str(tmp_path / "nowhere")])
    assert exit_.value.code == 2
    assert f"no {tmp_path / 'nowhere' / 'runs.jsonl'}" in capsys.readouterr().err
