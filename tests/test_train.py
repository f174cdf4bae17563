"""`python -m ecab_tune.train`: attention options as `--attn KEY=VALUE`, refused in one line
before any data is read."""

from __future__ import annotations

import re

import pytest

from ecab_tune import train


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
