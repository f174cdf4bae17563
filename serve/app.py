"""`create_app(settings)`: the routes, thin over `Service`; errors render in `serve.errors`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from serve.errors import Forbidden, NotSupported, add_error_handlers
from serve.metrics import CONTENT_TYPE, Metrics
from serve.openapi_docs import (
    METRICS_DOCS,
    add_security_scheme,
    predict_docs,
    reload_docs,
    responses,
)
from serve.parsing import check_token, has_token, parse_query, refuse_unknown_query
from serve.schemas import Health, ModelInfo, PredictQuery, PredictResponse, Readiness
from serve.service import Service
from serve.settings import ServeSettings
from serve.tracking import RequestTracking
from serve.uploads import BodyGuard, read_reload, read_uploads

STATIC = Path(__file__).parent / "static"


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
    add_error_handlers(app)
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
        query = parse_query(PredictQuery, request.query_params)
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

    reload_codes = (400, 401, 403, 408, 413, 422, *(() if reload_supported else (501,)))

    @app.post(
        "/reload",
        response_model=ModelInfo,
        response_model_exclude_none=True,
        responses=responses(*reload_codes, token=settings.token),
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
        body = await read_reload(request)
        return await request.app.state.service.reload(body.path if body else None)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")
