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


@pytest.mark.parametrize(
    ("objectives", "flags", "ranked_by"),
    [
        ("val_loss:min", [], ("val_loss", "min")),
        ("val_acc:max,macs:min", ["--metric", "macs"], ("macs", "min")),
        ("val_loss:min", ["--metric", "val_acc"], ("val_acc", "max")),
        ("val_acc:max", ["--metric", "val_loss"], ("val_loss", "min")),  # a loss: lower is better
        (None, [], ("val_acc", "max")),  # a search older than --objectives
    ],
)
def test_trials_are_ranked_by_the_searchs_own_objective_unless_told(
    tmp_path, monkeypatch, objectives, flags, ranked_by
):
    import ecab_tune.report

    settings = {"max_epochs": 3} | ({"objectives": objectives} if objectives else {})
    exp = make_experiment(tmp_path, TRIALS, summary={"search": settings})
    used = []
    monkeypatch.setattr(
        ecab_tune.report, "write_report", lambda exp, cfg, readme: used.append(cfg) or tmp_path
    )
    assert main([str(exp), *flags]) == 0
    assert (used[0].metric, used[0].mode) == ranked_by
