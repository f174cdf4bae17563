"""Request bodies: the size limit, the two ways to send images (multipart or JSON), and the
JSON body of `/reload`."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.errors import (
    BadRequest,
    InvalidInput,
    RequestTimeout,
    ServeError,
    TooLarge,
    UnsupportedMediaType,
    describe_validation,
)
from serve.images import Upload, from_base64
from serve.schemas import PredictJSON, ReloadRequest

FIELD = "files"
M = TypeVar("M", bound=BaseModel)


class BodyGuard:
    """ASGI middleware: a request body arrives within the limits or is refused.

    Over `max_bytes` by Content-Length or by counting (a lying or absent Content-Length): 413.
    Nothing new for `read_timeout_s` while the body is incomplete: 408, and the connection is
    closed. A client that disconnects before its body is complete: 400 (no one reads it, but
    it is a refusal like the others in the log and the metrics, not an internal error). All
    raise where the route reads the body, so they go through the app's error handling like
    any other refusal. A GET or HEAD is left alone: no route reads its body, and
    a file response reads the request only to notice a disconnect, while it sends, where a
    refusal would break the answer half-way.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        limit, timeout = self.max_bytes, self.read_timeout_s
        received = 0
        complete = False

        async def guarded_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body, receive() only waits for a disconnect: no timeout
                return await receive()
            if declared is not None:
                if not declared.isdigit():
                    raise BadRequest(
                        f"Content-Length {declared.decode(errors='replace')!r} is not a number"
                    )
                if int(declared) > limit:
                    raise TooLarge(f"the body is {int(declared):,} bytes; the limit is {limit:,}")
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except asyncio.TimeoutError:
                raise RequestTimeout(
                    f"the body stalled: nothing arrived for {timeout:g} s ({received:,} bytes "
                    "received)"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge(f"the body exceeds the limit of {limit:,} bytes")
                complete = not message.get("more_body", False)
            elif message["type"] == "http.disconnect":
                # Starlette's ClientDisconnect would be an unexpected error: a 500 and a
                # traceback in the log for every client that goes away mid-upload.
                raise BadRequest(
                    f"the client disconnected before its body was complete ({received:,} "
                    "bytes received)"
                )
            return message

        await self.app(scope, guarded_receive, send)


async def read_uploads(request: Request, max_images: int) -> list[Upload]:
    """The images of a `/predict` request, whichever encoding the client chose."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        uploads = await _from_multipart(request, max_images)
    elif media == "application/json":
        uploads = await _from_json(request, max_images)
    else:
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'} is not accepted: send multipart/form-data with "
            f"the images in the field '{FIELD}', or application/json "
            '{"images": ["<base64>", ...]}'
        )
    if len(uploads) > max_images:
        raise InvalidInput(f"too many images: {len(uploads)}; at most {max_images} per request")
    return uploads


async def _from_multipart(request: Request, max_images: int) -> list[Upload]:
    try:
        form = await request.form(max_files=max_images, max_fields=8)
    except ServeError:
        raise
    except HTTPException as exc:  # Starlette's multipart limits and syntax errors
        if "Too many files" in str(exc.detail):
            raise InvalidInput(f"too many images: at most {max_images} per request") from exc
        raise BadRequest(f"malformed multipart body: {exc.detail}") from exc
    except Exception as exc:  # the parser's own errors on garbage input
        raise BadRequest(f"malformed multipart body: {exc}") from exc
    try:
        unknown = sorted({key for key in form if key != FIELD})
        if unknown:
            raise InvalidInput(
                f"unexpected multipart field(s) {', '.join(map(repr, unknown))}; "
                f"send the images in the field '{FIELD}'"
            )
        items = form.getlist(FIELD)
        if not items:
            raise InvalidInput(f"no images: send one or more files in the field '{FIELD}'")
        uploads = []
        for item in items:
            if not isinstance(item, UploadFile):
                raise InvalidInput(f"the field '{FIELD}' must hold file uploads, not text")
            uploads.append(Upload(await item.read(), item.filename or ""))
        return uploads
    finally:
        await form.close()


async def _from_json(request: Request, max_images: int) -> list[Upload]:
    body = await request.body()
    if not body:
        raise BadRequest('empty body: send {"images": ["<base64>", ...]}')
    # Each value but the first follows a comma, and an image has at most one (a data: URL's):
    # refuse a body listing far more values before parsing it. 10 MB of tiny values took the
    # event loop 0.5 s and 250 MB to parse (measured), only to be refused afterwards.
    most = 2 * max_images + 8
    if body.count(b",") > most:
        raise InvalidInput(
            f"too many images: the body lists over {most} values; at most {max_images} per request"
        )
    parsed = parse_json(PredictJSON, body)
    if len(parsed.images) > max_images:
        raise InvalidInput(
            f"too many images: {len(parsed.images)}; at most {max_images} per request"
        )
    return [from_base64(text, i) for i, text in enumerate(parsed.images)]


async def read_reload(request: Request) -> ReloadRequest | None:
    """The body of a `/reload`: None when empty (reload the current source)."""
    body = await request.body()
    return parse_json(ReloadRequest, body) if body.strip() else None


def parse_json(model: type[M], body: bytes) -> M:
    """400 for a body that is not JSON; 422, saying where, for JSON of the wrong shape."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise BadRequest(
                f"the body is not valid JSON: {describe_validation(exc.errors())}"
            ) from exc
        raise InvalidInput(describe_validation(exc.errors())) from exc
