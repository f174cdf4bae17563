"""Prometheus metrics of one app (prometheus-client), summed over `--workers` at `GET /metrics`.

Each app registers its metrics in its own registry, so several apps in one process (tests) do
not collide. Under `--workers` the supervisor sets PROMETHEUS_MULTIPROC_DIR before it starts
them: every worker then writes its values to files there, and whichever worker answers
`/metrics` reads them all (gauges of dead workers are dropped by the supervisor).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "ecab_serve_requests",
            "HTTP requests answered, by route and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "ecab_serve_request_seconds",
            "time from a request's headers to its answer",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "ecab_serve_in_flight",
            "requests being received or processed",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.queue = Gauge(
            "ecab_serve_queue_images",
            "images waiting for a forward pass",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.batch = Histogram(
            "ecab_serve_batch_images",
            "images per forward pass",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.decode = Histogram(
            "ecab_serve_decode_seconds",
            "time to decode one request's images",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.generation = Gauge(
            "ecab_serve_model_generation",
            "reloads the answering worker has followed (0: its start-up model), per worker pid",
            multiprocess_mode="liveall",
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of this worker, or of all workers."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
