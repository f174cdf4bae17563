"""Every request's id (echoed or made) and its one JSON access-log line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_support import post

from serve.app import create_app
from serve.settings import ServeSettings


def test_request_id_is_echoed_or_made_and_logged(
    ckpt: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        TestClient(create_app(ServeSettings(model=str(ckpt)))) as c,
        caplog.at_level(logging.INFO, logger="serve.access"),
    ):
        mine = post(c, headers={"X-Request-ID": "trace-42"})
        made = c.get("/healthz")
        odd = c.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert mine.headers["x-request-id"] == "trace-42"
    assert len(made.headers["x-request-id"]) == 32
    assert odd.headers["x-request-id"] != "bad id\twith spaces"  # not echoed into logs as is
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "serve.access"]
    assert [(line["request_id"], line["path"], line["status"]) for line in lines] == [
        ("trace-42", "/predict", 200),
        (made.headers["x-request-id"], "/healthz", 200),
        (odd.headers["x-request-id"], "/healthz", 200),
    ]
    assert all(line["ms"] >= 0 and line["method"] in ("GET", "POST") for line in lines)


def test_an_unexpected_error_is_a_500_with_its_request_id_logged(
    ckpt: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(ServeSettings(model=str(ckpt)))
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level(logging.INFO):

        def broken(private: bool) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(app.state.service, "info", broken)
        r = c.get("/model", headers={"X-Request-ID": "trace-500"})
        after = c.get("/healthz")
    assert (r.status_code, r.json()) == (500, {"detail": "internal error (RuntimeError)"})
    assert r.headers["x-request-id"] == "trace-500"
    assert after.status_code == 200
    errors = [rec for rec in caplog.records if rec.name == "serve" and rec.exc_info]
    assert len(errors) == 1 and "trace-500" in errors[0].getMessage()
    access = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "serve.access"]
    assert ("trace-500", 500) in [(line["request_id"], line["status"]) for line in access]
