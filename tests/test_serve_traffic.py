"""The service past capacity, in-process: in-flight cap, deadlines, metrics, request ids, logs."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_support import FASHION, encode, make_checkpoint

from serve.app import create_app
from serve.settings import ServeSettings


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("traffic") / "ckpt", "cbam", FASHION, seed=3)


def png(seed: int = 0) -> bytes:
    return encode(np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8))


def post(client: TestClient, seed: int = 0, **kw):
    return client.post("/predict", files=[("files", ("x.png", png(seed), "image/png"))], **kw)


def slow_forward(client: TestClient, seconds: float) -> list[int]:
    calls: list[int] = []

    def hook(module, inputs):
        calls.append(len(inputs[0]))
        time.sleep(seconds)

    client.app.state.service.handle.model.register_forward_pre_hook(hook)
    return calls


def concurrently(client: TestClient, n: int) -> list:
    barrier = threading.Barrier(n)

    def one(i: int):
        barrier.wait(timeout=30)
        return post(client, i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_past_the_in_flight_cap_503_with_retry_after(ckpt: Path) -> None:
    with TestClient(create_app(ServeSettings(model=str(ckpt), max_in_flight=2, max_batch=1))) as c:
        slow_forward(c, 0.4)
        responses = concurrently(c, 6)
        codes = sorted(r.status_code for r in responses)
        assert codes.count(200) >= 2 and set(codes) <= {200, 503}, codes
        refused = [r for r in responses if r.status_code == 503]
        assert refused, codes
        for r in refused:
            assert r.headers["retry-after"] == "1"
            assert "over capacity" in r.json()["detail"] and "cap is 2" in r.json()["detail"]
        assert c.app.state.service.in_flight == 0
        assert post(c).status_code == 200  # capacity is back once they are answered


def test_the_deadline_answers_504_and_frees_the_batch_slots(ckpt: Path) -> None:
    settings = ServeSettings(model=str(ckpt), max_batch=1, request_timeout_s=0.3)
    with TestClient(create_app(settings)) as c:
        calls = slow_forward(c, 0.6)
        responses = concurrently(c, 4)
        assert [r.status_code for r in responses] == [504] * 4
        assert all("deadline of 0.3 s" in r.json()["detail"] for r in responses)
        time.sleep(1.5)  # the forward running at the deadline finishes; the rest never start
        assert len(calls) < 4, calls
        batcher = c.app.state.service.batcher
        assert not batcher._queue and batcher._queued_images == 0
        c.app.state.service.handle.model._forward_pre_hooks.clear()
        assert post(c).status_code == 200


def test_metrics_in_prometheus_text(ckpt: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with TestClient(create_app(ServeSettings(model=str(ckpt)))) as c:
        for i in range(3):
            assert post(c, i).status_code == 200
        assert (
            c.post("/predict", content=b"x", headers={"Content-Type": "text/plain"}).status_code
            == 415
        )
        assert c.get("/no/such/page").status_code == 404
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("ecab_serve_requests_total", route="/predict", method="POST", status="200") == 3
    assert value("ecab_serve_requests_total", route="/predict", method="POST", status="415") == 1
    # Unknown paths share one label: clients cannot grow the metric without bound.
    assert value("ecab_serve_requests_total", route="unmatched", method="GET", status="404") == 1
    assert value("ecab_serve_request_seconds_count", route="/predict") == 4
    assert value("ecab_serve_batch_images_count") == 3 and value("ecab_serve_batch_images_sum") == 3
    assert value("ecab_serve_in_flight") == 1  # the /metrics request itself
    assert value("ecab_serve_queue_images") == 0
    assert value("ecab_serve_model_generation") == 0
    # 28×28 images decode inline; each request's decode is timed all the same.
    assert value("ecab_serve_decode_seconds_count") == 3


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
