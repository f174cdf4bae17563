"""The same app on Ray Serve: N replicas of `create_app(settings)` behind Ray Serve's HTTP proxy.

Each replica builds its own app and Serve runs that app's lifespan on the replica (as uvicorn
does), so the model load and the micro-batcher are the app's own, not a second copy of them.
"""

from __future__ import annotations

import signal
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve as ray_serve
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ecab_tune.cluster import netloc, start_ray
from serve.app import create_app
from serve.settings import RayOptions, ServeSettings

APP_NAME = "ecab-serve"
REPLICA_HEADER = "x-serve-replica"


class ReplicaHeader:
    """Names the replica that answered, so load spreading can be seen from outside."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app = app
        self.replica = replica

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append(REPLICA_HEADER, self.replica)
            await send(message)

        await self.app(scope, receive, send_named)


@ray_serve.deployment
@ray_serve.ingress()  # no app yet: each replica builds its own in __serve_build_asgi_app__
class ServeReplica:
    """One replica; `settings` travel validated (the token stays a SecretStr)."""

    def __init__(self, settings: ServeSettings) -> None:
        self._settings = settings

    def __serve_build_asgi_app__(self) -> FastAPI:
        # A reload would reach one replica only: the endpoint says so instead.
        app = create_app(self._settings, reload_supported=False)
        replica = ray_serve.get_replica_context().replica_id.unique_id
        app.add_middleware(ReplicaHeader, replica=replica)
        return app


def application(settings: ServeSettings, replicas: int) -> ray_serve.Application:
    """The deployment with `replicas` copies, each reserving what its inference uses."""
    cpus = settings.threads or 1
    resources: dict[str, Any] = {
        "num_cpus": cpus,
        "num_gpus": settings.ray_gpus if settings.device.startswith("cuda") else 0,
    }
    # Pin the replica's torch threads to its reservation: the single-process default (all
    # cores but one) would have every replica on a node oversubscribe the same cores.
    settings = settings.model_copy(update={"threads": cpus})
    return ServeReplica.options(
        num_replicas=replicas,
        ray_actor_options=resources,
        # Serve's default (5 in flight) would cap a replica's batches far below max_batch.
        max_ongoing_requests=settings.max_batch,
    ).bind(settings)


def run_on_ray(settings: ServeSettings, options: RayOptions, log_level: str) -> None:
    """Start or join Ray, serve until SIGINT/SIGTERM, then shut Serve down."""
    start_ray(options.address, dashboard=False, tag="serve")
    signal.signal(signal.SIGTERM, _interrupt)
    logging_config = {"log_level": "DEBUG" if log_level == "trace" else log_level.upper()}
    try:
        # HeadOnly: one proxy, on the head node, owns --host/--port (on a cluster too).
        ray_serve.start(
            proxy_location="HeadOnly",
            http_options={"host": settings.host, "port": settings.port},
            logging_config=logging_config,
        )
        ray_serve.run(
            application(settings, options.replicas),
            name=APP_NAME,
            route_prefix="/",
            logging_config=logging_config,
        )
        print(
            f"[serve] {options.replicas} Ray Serve replica(s) of {settings.model} on "
            f"http://{netloc(settings.host, settings.port)} (the head node's proxy); Ctrl-C stops",
            flush=True,
        )
        while True:
            signal.pause()
    except KeyboardInterrupt:
        print("[serve] stopping Ray Serve", flush=True)
    finally:
        ray_serve.shutdown()
        ray.shutdown()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `docker stop` sends SIGTERM: shut down as Ctrl-C does
