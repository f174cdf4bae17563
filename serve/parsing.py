"""What a request carries besides its body: its bearer token and its query, parsed by hand.

The routes parse these with plain calls: FastAPI's dependency tree cost more event-loop time per
request than decoding a small image, and it reads a body before it checks the token (a /reload
without a token must be 401, whatever its body).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from serve.errors import InvalidInput, Unauthorized, describe_validation
from serve.settings import ServeSettings

M = TypeVar("M", bound=BaseModel)


def _bearer(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def check_token(request: Request, settings: ServeSettings) -> None:
    """401 unless the request carries the server's token (call only when it has one)."""
    assert settings.token is not None
    sent = _bearer(request)
    if sent is None:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    if not secrets.compare_digest(sent.encode(), settings.token.get_secret_value().encode()):
        raise Unauthorized("wrong bearer token")


def has_token(request: Request, settings: ServeSettings) -> bool:
    """True with the right token; False without one; 401 for a wrong one."""
    if settings.token is None or _bearer(request) is None:
        return False
    check_token(request, settings)
    return True


def refuse_unknown_query(request: Request, names: Iterable[str]) -> None:
    """FastAPI would silently ignore query parameters a route does not know: refuse them."""
    unknown = sorted(set(request.query_params) - set(names))
    if unknown:
        raise InvalidInput(
            f"unknown query parameter(s): {', '.join(unknown)}; "
            f"allowed: {', '.join(names) or 'none'}"
        )


def parse_query(model: type[M], query: Mapping[str, Any]) -> M:
    """The query as `model`, or 422 saying which parameter is wrong and what was sent."""
    try:
        return model.model_validate(dict(query))
    except ValidationError as exc:
        raise InvalidInput(describe_validation(exc.errors())) from exc
