"""uvicorn as the service runs it: a header-read timeout, a bounded drain, no second access log.

uvicorn closes idle keep-alive connections but waits forever for a request's headers; a client
that opens connections and trickles bytes would hold them open. `HeaderTimeout` answers 408 and
closes the connection when the headers are not complete `read_timeout_s` after the connection
opened or after its previous answer (the body's own timeout is `serve.uploads.BodyGuard`'s).
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serve.settings import ServeSettings


def header_timeout_protocol(seconds: float) -> type[HttpToolsProtocol]:
    class HeaderTimeout(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection gets the same time

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._headers_timed_out)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_timed_out(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or (self.cycle and not self.cycle.response_complete):
                return
            body = json.dumps(
                {"detail": f"the request's headers did not arrive within {seconds:g} s"}
            ).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"content-length: "
                + str(len(body)).encode()
                + b"\r\nconnection: close\r\n\r\n"
                + body
            )
            self.transport.close()

    return HeaderTimeout


def uvicorn_config(app: Any, settings: ServeSettings, log_level: str, **kw: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        http=header_timeout_protocol(settings.read_timeout_s),
        timeout_graceful_shutdown=settings.drain_s,
        access_log=False,  # serve.access_log writes one JSON line per request instead
        **kw,
    )


def serve_forever(
    app: Any, settings: ServeSettings, log_level: str, sockets: list[socket.socket] | None = None
) -> None:
    uvicorn.Server(uvicorn_config(app, settings, log_level)).run(sockets=sockets)
