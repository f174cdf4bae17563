"""`create_app(settings)`: thin routes over `Service`, one place that renders every error."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.body import BodyGuard, read_uploads
from serve.errors import (
    BadRequest,
    Forbidden,
    InvalidInput,
    NotSupported,
    Unauthorized,
    describe_validation,
)
from serve.metrics import CONTENT_TYPE, Metrics
from serve.openapi_docs import (
    METRICS_DOCS,
    add_security_scheme,
    predict_docs,
    reload_docs,
    responses,
)
from serve.schemas import Health, ModelInfo, PredictQuery, PredictResponse, Readiness, ReloadRequest
from serve.service import Service
from serve.settings import ServeSettings
from serve.tracking import RequestTracking

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("serve")

# Parsing by hand ------------------------------------------------------------------------------
# The routes parse their query, token and body with plain calls: FastAPI's dependency tree cost
# more event-loop time per request than decoding a small image, and it reads a body before it
# checks the token (a /reload without a token must be 401, whatever its body).


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


def parse_model(model: type[BaseModel], raw: Any) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(describe_validation(exc.errors())) from exc


async def parse_reload(request: Request) -> ReloadRequest | None:
    body = await request.body()
    if not body.strip():
        return None
    try:
        return ReloadRequest.model_validate_json(body)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise BadRequest(
                f"the body is not valid JSON: {describe_validation(exc.errors())}"
            ) from exc
        raise InvalidInput(describe_validation(exc.errors())) from exc


# App ------------------------------------------------------------------------------------------


def create_app(settings: ServeSettings, reload_supported: bool = True) -> FastAPI:
    """The service; `reload_supported=False` where a reload could not reach every replica."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings, metrics)
        await service.start()
        app.state.service = service
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="ecab_tune serve",
        summary="Predictions and attention weights of the best model of an ecab_tune search",
        version="1.1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(
        BodyGuard, max_bytes=settings.max_body_bytes, read_timeout_s=settings.read_timeout_s
    )
    app.add_middleware(RequestTracking, metrics=metrics)  # outermost: sees every answer
    _add_error_handlers(app)
    _add_routes(app, settings, metrics, reload_supported)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    add_security_scheme(app)
    return app


def _add_routes(
    app: FastAPI, settings: ServeSettings, metrics: Metrics, reload_supported: bool
) -> None:
    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses=responses(400, 401, 408, 413, 415, 422, 503, 504, token=settings.token),
        openapi_extra=predict_docs(settings),
        summary="Top-k classes and attention weights for one or several images",
    )
    async def predict(request: Request) -> PredictResponse:
        service: Service = request.app.state.service
        if settings.token is not None:
            check_token(request, settings)
        refuse_unknown_query(request, PredictQuery.model_fields)
        query: PredictQuery = parse_model(PredictQuery, dict(request.query_params))
        service.current()  # 503 before any body is read
        service.admit()  # and 503 at the in-flight cap

        async def work(body_received: Any) -> PredictResponse:
            images = await read_uploads(request, settings.max_images_per_request)
            body_received()
            with service.slot():
                return await service.predict(images, query.top_k, query.attention, query.cam)

        return await service.within_deadline(work)

    @app.get(
        "/model",
        response_model=ModelInfo,
        response_model_exclude_none=True,
        responses=responses(401, 422, 503, token=settings.token),
        openapi_extra={"security": [{}, {"HTTPBearer": []}]} if settings.token else None,
        summary="The served model; paths, search config and host details with the token only",
    )
    async def model(request: Request) -> ModelInfo:
        refuse_unknown_query(request, ())
        private = has_token(request, settings)
        return request.app.state.service.info(private)

    @app.get(
        "/healthz",
        response_model=Health,
        responses=responses(422),
        summary="Liveness: the process answers",
    )
    async def healthz(request: Request) -> Health:
        refuse_unknown_query(request, ())
        return Health()

    @app.get(
        "/readyz",
        response_model=Readiness,
        response_model_exclude_none=True,
        responses={503: {"model": Readiness, "description": "not ready, and why"}}
        | responses(401, 422, token=settings.token),
        summary="Readiness: a model is loaded and this worker follows the latest reload",
    )
    async def readyz(request: Request) -> Any:
        refuse_unknown_query(request, ())
        ready = request.app.state.service.readiness(has_token(request, settings))
        if ready.status == "ready":
            return ready
        return JSONResponse(ready.model_dump(exclude_none=True), 503)

    @app.get("/metrics", responses=METRICS_DOCS, summary="Prometheus metrics of all workers")
    async def prometheus(request: Request) -> Response:
        refuse_unknown_query(request, ())
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.post(
        "/reload",
        response_model=ModelInfo,
        response_model_exclude_none=True,
        responses=responses(
            400, 401, 403, 422, *(() if reload_supported else (501,)), token=settings.token
        ),
        openapi_extra=reload_docs(settings),
        summary="Serve another (or the re-exported) checkpoint; the old one serves meanwhile",
    )
    async def reload(request: Request) -> ModelInfo:
        if not reload_supported:
            raise NotSupported(
                "reloading is not supported on Ray Serve (it would reach one replica): "
                "restart the command with another --model"
            )
        if settings.token is None:
            raise Forbidden(
                "reloading needs a bearer token, and this server has none: "
                "start it with ECAB_SERVE_TOKEN set"
            )
        check_token(request, settings)  # before anything of the request is read
        refuse_unknown_query(request, ())
        body = await parse_reload(request)
        return await request.app.state.service.reload(body.path if body else None)

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
