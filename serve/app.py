"""`create_app(settings)`: thin routes over `Service`, one place that renders every error."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.body import FIELD, BodyLimit, read_uploads
from serve.errors import Forbidden, InvalidInput, Unauthorized, describe_validation
from serve.schemas import (
    Error,
    Health,
    ModelInfo,
    PredictJSON,
    PredictQuery,
    PredictResponse,
    Readiness,
    ReloadRequest,
)
from serve.service import Service
from serve.settings import ServeSettings

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("serve")

# Dependencies ---------------------------------------------------------------------------------
# All `async def`: FastAPI runs a sync dependency in a worker thread, and these are trivial, so
# the thread hops (one per dependency, each request) would cost more than the work.


async def get_service(request: Request) -> Service:
    return request.app.state.service


async def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
_bearer = HTTPBearer(auto_error=False, description="ECAB_SERVE_TOKEN, when the server has one")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _check_token(credentials: HTTPAuthorizationCredentials | None, token: str) -> None:
    if credentials is None:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    if not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
        raise Unauthorized("wrong bearer token")


async def reload_auth(settings: SettingsDep, credentials: BearerDep) -> None:
    if settings.token is None:
        raise Forbidden(
            "reloading needs a bearer token, and this server has none: "
            "start it with ECAB_SERVE_TOKEN set"
        )
    _check_token(credentials, settings.token.get_secret_value())


def refuse_unknown_query(request: Request, names: Iterable[str]) -> None:
    """FastAPI would silently ignore query parameters a route does not know: refuse them."""
    unknown = sorted(set(request.query_params) - set(names))
    if unknown:
        raise InvalidInput(
            f"unknown query parameter(s): {', '.join(unknown)}; "
            f"allowed: {', '.join(names) or 'none'}"
        )


def only_query(*names: str) -> Callable[[Request], Awaitable[None]]:
    async def check(request: Request) -> None:
        refuse_unknown_query(request, names)

    return check


def parse_query(request: Request) -> PredictQuery:
    refuse_unknown_query(request, PredictQuery.model_fields)
    try:
        return PredictQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise InvalidInput(describe_validation(exc.errors())) from exc


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
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


# Docs for the hand-parsed /predict request (see `predict` for why it is parsed by hand).
PREDICT_DOCS: dict[str, Any] = {
    "parameters": query_parameters(PredictQuery),
    "security": [{"HTTPBearer": []}],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {
                        FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "image files: PNG, JPEG, WebP, BMP or GIF, any mode",
                        }
                    },
                }
            },
            "application/json": {"schema": PredictJSON.model_json_schema()},
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Error, "description": text}
    for code, text in {
        400: "malformed body",
        401: "missing or wrong bearer token",
        413: "body over max_body_bytes, or an image over max_pixels",
        415: "neither multipart nor JSON",
        422: "unusable input: not an image, bad base64, wrong field, bad query value",
        503: "no model loaded",
    }.items()
}

# App ------------------------------------------------------------------------------------------


def create_app(settings: ServeSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings)
        await service.start()
        app.state.service = service
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="ecab_tune serve",
        summary="Predictions and attention weights of the best model of an ecab_tune search",
        version="1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    _add_error_handlers(app)
    _add_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _add_routes(app: FastAPI) -> None:
    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses=ERRORS,
        openapi_extra=PREDICT_DOCS,
        summary="Top-k classes and attention weights for one or several images",
    )
    async def predict(request: Request) -> PredictResponse:
        # The hot path, parsed by plain calls: FastAPI's dependency tree here (query, token,
        # readiness, body) cost more event-loop time per request than decoding a small image.
        # And FastAPI cannot declare "multipart OR JSON" anyway; PREDICT_DOCS documents it.
        settings: ServeSettings = request.app.state.settings
        service: Service = request.app.state.service
        if settings.token is not None:
            _check_token(await _bearer(request), settings.token.get_secret_value())
        query = parse_query(request)
        service.current()  # 503 before any body is read
        images = await read_uploads(request, settings.max_images_per_request)
        return await service.predict(images, query.top_k, query.attention)

    @app.get("/model", response_model=ModelInfo, responses={503: {"model": Error}})
    async def model(service: ServiceDep) -> ModelInfo:
        return service.info()

    @app.get("/healthz", response_model=Health, summary="Liveness: the process answers")
    async def healthz() -> Health:
        return Health()

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness}},
        summary="Readiness: a model is loaded",
    )
    async def readyz(service: ServiceDep) -> Any:
        ready = service.readiness()
        return ready if ready.status == "ready" else JSONResponse(ready.model_dump(), 503)

    @app.post(
        "/reload",
        response_model=ModelInfo,
        responses={code: ERRORS[code] for code in (401, 422)} | {403: {"model": Error}},
        dependencies=[Depends(only_query()), Depends(reload_auth)],
        summary="Serve another (or the re-exported) checkpoint; the old one serves meanwhile",
    )
    async def reload(
        service: ServiceDep, body: Annotated[ReloadRequest | None, Body()] = None
    ) -> ModelInfo:
        return await service.reload(body.path if body else None)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_validation(exc.errors())}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, 500)
