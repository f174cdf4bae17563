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
