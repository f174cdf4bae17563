"""The settings: a blank token is none; they travel to worker processes intact."""

from __future__ import annotations

import os
import pickle

import pytest
from serve_support import make_client, noise_png, post_files

from serve.__main__ import parse_args
from serve.settings import ServeSettings


def test_blank_token_means_no_token(ckpts, monkeypatch: pytest.MonkeyPatch) -> None:
    # docker-compose passes ECAB_SERVE_TOKEN="" when the user set none.
    monkeypatch.setenv("ECAB_SERVE_TOKEN", "  ")
    settings, _ = parse_args(["--model", str(ckpts["cbam"])])
    assert settings.token is None
    with make_client(ckpts["cbam"]) as c:
        assert post_files(c, [noise_png(1)], headers={}).status_code == 200


def test_settings_travel_to_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ServeSettings(
        model="runs/x",
        port=9100,
        max_wait_ms=1.5,
        token="s3cret",
        workers=2,
        state_dir="/tmp/state",
        worker_index=1,
    )
    assert pickle.loads(pickle.dumps(settings)) == settings  # how the fork server hands them over
    # Workers share the cores: each leaves the others (and its event loop) theirs.
    assert ServeSettings(workers=4).inference_threads() == max(1, (os.cpu_count() or 2) // 4 - 1)


@pytest.mark.parametrize("token", ["sécret", " s3cret", "s3cret\t", "s3\ncret"])
def test_a_token_no_header_can_carry_is_refused_without_echoing_it(
    token: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Non-ASCII arrives as Latin-1 and the ends are stripped: every request would get 401.
    monkeypatch.setenv("ECAB_SERVE_TOKEN", token)
    with pytest.raises(SystemExit) as exit_:
        parse_args([])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "ECAB_SERVE_TOKEN: Value error, must be printable ASCII, no spaces at its ends" in err
    assert token.strip() not in err
