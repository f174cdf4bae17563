"""Every error the service reports, each with its status code, and the one place that renders
every error as JSON `{"detail": ...}` (`add_error_handlers`).

They subclass `HTTPException` so that FastAPI passes them through untouched from anywhere,
including from inside body parsing (the body-size limit fires while the body is being read).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.tracking import HEADER as REQUEST_ID_HEADER

log = logging.getLogger("serve")


class ServeError(HTTPException):
    """A request the service refuses; `detail` says what was wrong, in the client's terms."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=type(self).status_code, detail=detail, headers=headers)


class BadRequest(ServeError):
    """The body cannot be parsed at all (malformed JSON or multipart)."""


class InvalidInput(ServeError):
    """Well-formed request, unusable content: not an image, bad base64, wrong field, bad value."""

    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT


class TooLarge(ServeError):
    """Body over `max_body_bytes`, or an image over `max_pixels` (decompression bomb)."""

    status_code = status.HTTP_413_CONTENT_TOO_LARGE


class UnsupportedMediaType(ServeError):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE


class Unauthorized(ServeError):
    status_code = status.HTTP_401_UNAUTHORIZED

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServeError):
    status_code = status.HTTP_403_FORBIDDEN


class NotReady(ServeError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE


class Overloaded(ServeError):
    """Past the worker's in-flight cap: refused at once, before any work, with a retry hint."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


class RequestTimeout(ServeError):
    """The body stalled or did not arrive in time; the connection is closed after the answer."""

    status_code = status.HTTP_408_REQUEST_TIMEOUT

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Connection": "close"})


class DeadlineExceeded(ServeError):
    """The request was received but not answered within its deadline; its batch slot is freed."""

    status_code = status.HTTP_504_GATEWAY_TIMEOUT

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


class NotSupported(ServeError):
    status_code = status.HTTP_501_NOT_IMPLEMENTED


class BadCheckpoint(InvalidInput):
    """A `/reload` target that is not a loadable checkpoint; the old model keeps serving."""


def describe_validation(errors: Sequence[Any]) -> str:
    """Pydantic/FastAPI validation errors as one readable line: where, what, and the value sent."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        text = f"{where}: {error.get('msg', 'invalid')}"
        if "input" in error and error.get("type") not in ("missing", "json_invalid"):
            shown = repr(error["input"])
            text += f" (got {shown[:80] + '…' if len(shown) > 80 else shown})"
        parts.append(text)
    return "; ".join(parts) or "invalid request"


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_validation(exc.errors())}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette answers these outside every middleware, the request tracking's included:
        # its id is added here, so the responses most worth tracing carry one too.
        request_id = getattr(request.state, "request_id", None)
        log.exception(
            "unexpected error on %s %s (request %s)", request.method, request.url.path, request_id
        )
        headers = {REQUEST_ID_HEADER: request_id} if request_id else None
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, 500, headers)
