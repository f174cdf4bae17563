"""ASGI middleware around every request: its id, its metrics, and one JSON access-log line.

The id is the client's `X-Request-ID` when it is a sane token (so a trace can cross services),
else a fresh one; either way it is echoed in the response and written in the log line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.metrics import Metrics

HEADER = "x-request-id"
_SANE_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")
access_log = logging.getLogger("serve.access")


class RequestTracking:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(HEADER.encode())
        request_id = sent.decode() if sent and _SANE_ID.fullmatch(sent) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = 500  # what the client sees if the app fails before answering

        async def send_tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(HEADER, request_id)
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_tracked)
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - start
            route = _route(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_log.info(
                    json.dumps(
                        {
                            "time": round(time.time(), 3),
                            "request_id": request_id,
                            "method": scope["method"],
                            "path": scope["path"],
                            "route": route,
                            "status": status,
                            "ms": round(seconds * 1000, 2),
                            "client": f"{client[0]}:{client[1]}" if client else None,
                            "worker": os.getpid(),
                        }
                    )
                )


def _route(scope: Scope) -> str:
    """The matched route's template: a bounded label set, whatever paths clients invent."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return route.path
    return "/static" if scope["path"].startswith("/static/") else "unmatched"


def configure_access_log(log_level: str) -> None:
    """One bare JSON line per request on stderr (at --log-level info or below)."""
    if not access_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.propagate = False
    level = logging.getLevelName(log_level.upper())
    access_log.setLevel(level if isinstance(level, int) else logging.INFO)
