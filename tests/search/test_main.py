"""The CLI's edge: a bad flag, space, objective or missing tracker is one line, exit 2."""

import pytest

from ecab_tune.config import DataConfig
from ecab_tune.search.__main__ import build_parser, main, search_config
from ecab_tune.search.objectives import parse_objectives


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--num-samples", "0"], "--num-samples=0 must be >= 1"),
        (["--seed", "-1"], "--seed=-1 must be in [0, 2**32)"),
        (["--seed", str(2**32)], "must be in [0, 2**32)"),
        (["--space", "nope"], "built-in spaces"),
        (["--resume"], "--resume needs --name"),
        (["--gpus-per-trial", "1.5"], "a trial trains on one GPU"),
        (["--gpus-per-trial", "2"], "must be in [0, 1]"),
        (["--val-fraction", "0"], "never on test"),
        (["--scheduler", "pbt"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_flags_clearly(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_resume_of_a_missing_experiment_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--space", "quick", "--storage", str(tmp_path), "--name", "ghost", "--resume"])
    assert "no experiment to continue" in capsys.readouterr().err


def test_resume_refuses_a_flag_that_contradicts_the_search_before_any_work(tmp_path, capsys):
    exp = tmp_path / "q"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"")
    (exp / "search.json").write_text('{"space": "quick", "num_samples": 24, "seed": 0}')
    before = sorted(p.name for p in exp.iterdir())
    with pytest.raises(SystemExit) as exit_:
        main(["--storage", str(tmp_path), "--name", "q", "--resume", "--num-samples", "48"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--num-samples 48 contradicts its 24 (leave the flag out)" in err
    assert sorted(p.name for p in exp.iterdir()) == before
    with pytest.raises(SystemExit):  # its search.json predates recording the data: no crash
        main(
            ["--storage", str(tmp_path), "--name", "q", "--resume", "--subset", "6", "--seed", "1"]
        )
    assert "--seed 1 contradicts its 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text,words",
    [
        ("val_acc", "'val_acc' must be METRIC:max or METRIC:min"),
        ("val_acc:up", "'val_acc:up' must be METRIC:max or METRIC:min"),
        ("accuracy:max", "'accuracy' is not a reported metric; one of train_loss"),
        ("macs:min,macs:max", "'macs' is named twice"),
    ],
)
def test_bad_objectives_are_one_line_errors_naming_the_problem(text, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--objectives", text])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert "latency_ms" in parse_objectives("latency_ms:min")[0].metric


def test_help_shows_the_new_flags(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--objectives", "--warm-start", "--tracker"):
        assert flag in out
    assert "{none,tensorboard,mlflow}" in out


@pytest.mark.parametrize("tracker,module", [("tensorboard", "tensorboardX"), ("mlflow", "mlflow")])
def test_a_tracker_without_its_package_is_refused_before_the_search(
    tracker, module, monkeypatch, tmp_path, capsys
):
    monkeypatch.setitem(__import__("sys").modules, module, None)  # as if not installed
    with pytest.raises(SystemExit) as exit_:
        main(["--space", "quick", "--storage", str(tmp_path), "--tracker", tracker])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"--tracker {tracker} needs {module}: pip install 'ecab_tune[trackers]'" in err
    assert not any(tmp_path.iterdir())


def test_the_data_flags_are_data_configs_and_default_to_the_spaces():
    parser = build_parser()
    cfg = search_config(parser.parse_args(["--space", "quick", "--image-size", "48"]))
    assert cfg.data == DataConfig(dataset="fashion-mnist", subset=30000, image_size=48)
    cfg = search_config(parser.parse_args(["--space", "quick", "--subset", "600"]))
    assert (cfg.data.subset, cfg.data.val_fraction) == (600, 0.1)
    resumed = search_config(parser.parse_args(["--name", "q", "--resume", "--subset", "600"]))
    assert resumed.data is None  # a resumed search keeps the data it started with
