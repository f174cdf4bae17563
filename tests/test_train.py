"""`python -m ecab_tune.train`: attention options as `--attn KEY=VALUE`, refused in one line
before any data is read."""

from __future__ import annotations

import re

import pytest

from ecab_tune import checkpoint, train


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--attn", "fusion"], "argument --attn: expected KEY=VALUE, got 'fusion'"),
        (["--attn", "=sum"], "argument --attn: expected KEY=VALUE, got '=sum'"),
        (
            ["--attention", "se", "--attn", "fusion=sum"],
            "attention 'se' takes no option 'fusion'; it takes: min_width, reduction",
        ),
        (
            ["--attention", "sk"],
            "argument --attention: invalid choice: 'sk' (choose from 'none', 'se', 'cbam',"
            " 'eca', 'bridge', 'bav2', 'ecab', 'ecab_head')",
        ),
    ],
)
def test_bad_attention_options_are_one_line_errors(argv, words, tmp_path, capsys, monkeypatch):
    def no_data(*args, **kwargs):
        pytest.fail("the data was read before the options were checked")

    monkeypatch.setattr(train, "load_data", no_data)
    with pytest.raises(SystemExit) as exit_:
        train.main([*argv, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == f"python -m ecab_tune.train: error: {words}"
    assert not (tmp_path / "out").exists()


def test_help_states_each_default_once(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: resnet20)" in text and "(default: fashion-mnist)" in text
    assert not re.search(r"\(default: [^)]*\) \(default:", text)


TINY = ["--model", "resnet8", "--attention", "se", "--width", "0.25", "--subset", "200"]
TINY += ["--batch-size", "64", "--epochs", "2", "--val-fraction", "0.2"]


def test_resume_continues_with_the_saved_configs_and_refuses_contradicting_flags(
    tmp_path, capsys, monkeypatch
):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert train.main([*TINY, "--out", str(whole)]) == 0
    expected = capsys.readouterr().out.splitlines()

    real_save = train.save_trainer

    def killed_after_the_first_epoch(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_trainer", killed_after_the_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train.main([*TINY, "--out", str(cut)])
    monkeypatch.setattr(train, "save_trainer", real_save)
    capsys.readouterr()
    # No model, data or recipe flags: all of them come from the checkpoint, not the defaults.
    assert train.main(["--out", str(cut), "--resume"]) == 0
    resumed = capsys.readouterr().out.splitlines()
    assert resumed[0] == expected[0]  # resnet8+se on the same split, the same parameter count
    assert [line.split("loss")[0].strip() for line in resumed[1:-1]] == ["epoch   2/2"]
    assert resumed[-1].split("checkpoint")[0] == expected[-1].split("checkpoint")[0]
    meta = checkpoint.load_model(cut)[1]
    assert (meta.model.name, meta.model.attention, meta.train.epochs) == ("resnet8", "se", 2)

    for flags, words in (
        (["--lr", "0.3"], "--lr 0.3 contradicts its 0.1"),
        (["--attention", "eca"], "--attention eca contradicts its se"),
        (["--subset", "300"], "--subset 300 contradicts its 200"),
    ):
        with pytest.raises(SystemExit):
            train.main([*flags, "--out", str(cut), "--resume"])
        assert words in capsys.readouterr().err
    # The same flags as saved, or where the data lives, are fine.
    assert train.main([*TINY, "--data-dir", "elsewhere", "--out", str(cut), "--resume"]) == 0
    assert "replaces the checkpoint" not in "\n".join(expected) + capsys.readouterr().out

    # A fresh run into a checkpoint's folder says so while that checkpoint is still whole.
    def stopped_before_saving(*args, **kwargs):
        raise KeyboardInterrupt

    saved = (whole / checkpoint.META).read_bytes()
    monkeypatch.setattr(train, "save_trainer", stopped_before_saving)
    with pytest.raises(KeyboardInterrupt):
        train.main([*TINY, "--out", str(whole)])
    assert f"the first epoch replaces the checkpoint in {whole}" in capsys.readouterr().out
    assert (whole / checkpoint.META).read_bytes() == saved


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--resume"], "is not a checkpoint: meta.json is missing"),
        (["--subset", "100", "--batch-size", "128"], "exceeds the 80 training images"),
    ],
)
def test_a_run_that_cannot_start_is_one_line(argv, words, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train.main([*TINY, *argv, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(words)


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train, "load_data", lambda *a: pytest.fail("data read"))
    (tmp_path / "file").write_text("mine")
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path / "file")])
    assert "--out" in capsys.readouterr().err and (tmp_path / "file").read_text() == "mine"


@pytest.mark.parametrize(
    "flags,words",
    [
        (["--lr", "0.1"], "--lr 0.1 contradicts its 0.3"),
        (["--epochs", "10"], "--epochs 10 contradicts its 3"),
        (["--model", "resnet20"], "--model resnet20 contradicts its resnet8"),
        (["--val-fraction", "0.1"], "--val-fraction 0.1 contradicts its 0.2"),
        (["--nesterov"], "--nesterov True contradicts its False"),
    ],
)
def test_resume_refuses_a_flag_given_at_its_default_that_contradicts_the_checkpoint(
    flags, words, tmp_path, capsys, monkeypatch
):
    """A flag the user typed is never ignored, even where its value is the flag's default."""
    from ecab_tune.config import DataConfig, TrainConfig, to_dict
    from ecab_tune.data.sources import FASHION_MNIST
    from ecab_tune.models import ModelConfig

    model_cfg = ModelConfig("resnet8", "se", width=0.25, num_classes=10, in_chans=1)
    recipe = TrainConfig(epochs=3, lr=0.3, nesterov=False)
    data = DataConfig(subset=200, val_fraction=0.2)
    meta = checkpoint.Meta(model_cfg, FASHION_MNIST, recipe, extra={"data_config": to_dict(data)})
    checkpoint.save(tmp_path / "cut", model_cfg.build(), meta)
    monkeypatch.setattr(train, "load_data", lambda *a: pytest.fail("the flag was ignored"))
    with pytest.raises(SystemExit) as exit_:
        train.main([*flags, "--out", str(tmp_path / "cut"), "--resume"])
    assert exit_.value.code == 2
    assert words in capsys.readouterr().err


def test_resume_refuses_data_that_changed_since_the_checkpoint(tmp_path, capsys, monkeypatch):
    """An image folder that gained a class (or other images) since the checkpoint is not the
    data the run trained on: resuming would train the saved 2-class head on 3 classes' labels
    (a traceback at the first batch) or normalise by other statistics, and overwrite the
    checkpoint with a meta.json that no longer matches its weights."""
    from synthetic import make_splits

    from ecab_tune.config import DataConfig, TrainConfig, to_dict
    from ecab_tune.models import ModelConfig

    saved, now = make_splits(classes=2), make_splits(classes=3)
    model_cfg = ModelConfig("resnet8", "se", width=0.25, num_classes=2, in_chans=1)
    data = DataConfig(dataset="imagefolder:photos")
    meta = checkpoint.Meta(
        model_cfg, saved.info, TrainConfig(epochs=2), extra={"data_config": to_dict(data)}
    )
    checkpoint.save(tmp_path / "cut", model_cfg.build(), meta)
    monkeypatch.setattr(train, "load_data", lambda *a: now)
    monkeypatch.setattr(train, "make_trainer", lambda *a, **k: pytest.fail("resumed"))
    with pytest.raises(SystemExit) as exit_:
        train.main(["--out", str(tmp_path / "cut"), "--resume", "--device", "cpu"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "imagefolder:photos is not the data" in error and "classes" in error
