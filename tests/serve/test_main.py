"""`python -m serve`'s command line: flags from the settings, over the environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from serve_support import ROOT

from serve.__main__ import parse_args


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECAB_SERVE_PORT", "9001")
    monkeypatch.setenv("ECAB_SERVE_MAX_BATCH", "8")
    monkeypatch.setenv("ECAB_SERVE_TOKEN", "from-env")
    settings, level = parse_args(["--model", "runs/x", "--port", "9002", "--log-level", "debug"])
    assert settings.model == "runs/x" and settings.port == 9002 and settings.max_batch == 8
    assert settings.host == "127.0.0.1"
    assert settings.token is not None and settings.token.get_secret_value() == "from-env"
    assert level == "debug"
    with pytest.raises(SystemExit):
        parse_args(["--max-batch", "0"])


@pytest.mark.slow
def test_cli_refuses_a_bad_model_path(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "serve", "--model", str(tmp_path / "nope")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "does not exist" in run.stderr


def test_flags_are_the_settings_fields() -> None:
    """Help, defaults and checks come from ServeSettings: one flag per field, none repeated."""
    from serve.__main__ import build_parser
    from serve.settings import NOT_FLAGS, ServeSettings

    parser = build_parser()
    actions = {a.dest: a for a in parser._actions}
    for name, field in ServeSettings.model_fields.items():
        if name in NOT_FLAGS:
            assert name not in actions
            continue
        action = actions[name]
        assert action.option_strings == ["--" + name.replace("_", "-")]
        assert action.default is None  # unset flags leave the environment's value
        assert action.help.startswith(field.description.replace("%", "%%")), name
        assert action.help.count("default") <= 1, action.help
        if field.default is not None:
            assert action.help.endswith(")") and "(default: " in action.help, action.help
    text = parser.format_help()
    assert "--token" not in text and "ECAB_SERVE_TOKEN" in text
    assert "(default: 8000)" in text and "(default: 10,485,760)" in text
    with pytest.raises(SystemExit):
        parse_args(["--port", "70000"])  # the field's range, checked as a flag error


@pytest.mark.parametrize("device", ["auto", "tpu", "cuda:x", "gpu"])
def test_a_device_torch_cannot_name_is_a_flag_error(
    device: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert parse_args(["--device", "cuda:1"])[0].device == "cuda:1"
    with pytest.raises(SystemExit) as exited:
        parse_args(["--device", device])
    assert exited.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]  # usage, then the error in one line
    assert last.startswith("python -m serve: error: --device: ") and "cpu|cuda" in last
    assert repr(device) in last
