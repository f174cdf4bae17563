"""The OpenAPI description of what the hand-parsed routes accept and answer.

It is checked against the live server by schemathesis (tests/serve/test_openapi_docs.py): every
status a route can answer is listed, bearer security is declared only where a token is asked
for, and a multipart body needs at least one file, as the route does.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import SecretStr

from serve.schemas import Error, PredictJSON, PredictQuery, ReloadRequest
from serve.settings import ServeSettings
from serve.uploads import FIELD

BEARER = "HTTPBearer"
_TEXTS = {
    400: "malformed body (JSON or multipart)",
    401: "missing or wrong bearer token",
    403: "reloading is off (no token configured), or the path is outside the model root",
    408: "the headers or the body did not arrive in time",
    413: "body over max_body_bytes, an image over max_pixels, or images over max_request_pixels",
    415: "neither multipart nor JSON",
    422: "unusable input: not an image, bad base64, wrong field, bad or unknown query value, "
    "a checkpoint that does not load",
    501: "not supported here (Ray Serve)",
    503: "no model loaded, or over the in-flight cap (see Retry-After)",
    504: "no answer within the request deadline",
}
_RETRY = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def responses(*codes: int, token: SecretStr | bool | None = None) -> dict[int | str, Any]:
    out: dict[int | str, Any] = {}
    for code in codes:
        if code == 401 and not token:
            continue  # nothing asks for a token: never 401
        out[code] = {"model": Error, "description": _TEXTS[code]}
        if code in (503, 504):
            out[code]["headers"] = _RETRY
    return out


def query_parameters(model: type[Any]) -> list[dict[str, Any]]:
    """OpenAPI `parameters` for a query validated by hand with `model`."""
    schema = model.model_json_schema()
    return [
        {
            "name": name,
            "in": "query",
            "required": name in schema.get("required", ()),
            "description": prop.get("description", ""),
            "schema": {k: v for k, v in prop.items() if k != "description"},
        }
        for name, prop in schema["properties"].items()
    ]


def predict_docs(settings: ServeSettings) -> dict[str, Any]:
    docs: dict[str, Any] = {
        "parameters": query_parameters(PredictQuery),
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [FIELD],
                        "additionalProperties": False,
                        "properties": {
                            FIELD: {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": settings.max_images_per_request,
                                "items": {"type": "string", "format": "binary"},
                                "description": "image files: PNG, JPEG, WebP, BMP or GIF, any mode",
                            }
                        },
                    }
                },
                "application/json": {"schema": PredictJSON.model_json_schema()},
            },
        },
    }
    if settings.token is not None:
        docs["security"] = [{BEARER: []}]
    return docs


def reload_docs(settings: ServeSettings) -> dict[str, Any]:
    docs: dict[str, Any] = {
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": ReloadRequest.model_json_schema()}},
        },
    }
    if settings.token is not None:  # without one, every reload is 403, whatever is sent
        docs["security"] = [{BEARER: []}]
    return docs


METRICS_DOCS: dict[int | str, Any] = {
    200: {
        "description": "Prometheus text exposition format",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    422: {"model": Error, "description": "unknown query parameter"},
}


def add_security_scheme(app: FastAPI) -> None:
    """Declare the bearer scheme the routes check by hand (FastAPI only adds it for Depends)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "ECAB_SERVE_TOKEN, when the server has one",
                }
            }
            # /metrics answers text, not the JSON FastAPI assumes for a plain Response.
            ok = schema["paths"]["/metrics"]["get"]["responses"]["200"]
            ok["content"] = METRICS_DOCS[200]["content"]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
