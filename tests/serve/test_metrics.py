"""`GET /metrics`: Prometheus text of requests, latency, batches, queue and decoding."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from serve_support import post

from serve.app import create_app
from serve.settings import ServeSettings


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
