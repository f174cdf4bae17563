"""`python -m serve --model PATH`: serve a checkpoint (or an experiment's best) with uvicorn.

With `--ray-replicas N` the same app runs as N Ray Serve replicas behind Ray Serve's HTTP proxy,
on an embedded Ray or on the cluster `--ray-address` names.
Every flag defaults to its `ECAB_SERVE_*` environment variable, then to the built-in default.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from ecab_tune.checkpoint import CheckpointError, read_meta
from serve.settings import RayOptions, ServeSettings

FLAGS = {
    "model": (str, "checkpoint folder, or an experiment folder (its best/ is served)"),
    "host": (str, "interface to bind (default 127.0.0.1: loopback only)"),
    "port": (int, "TCP port (default 8000)"),
    "device": (str, "torch device (default cpu)"),
    "threads": (int, "torch intra-op threads (default: all cores but one)"),
    "max_batch": (int, "most images per forward pass (default 32)"),
    "max_wait_ms": (float, "longest wait for a batch to fill (default 3)"),
    "max_images_per_request": (int, "most images in one request (default 16)"),
    "max_body_bytes": (int, "largest request body; larger gets 413 (default 10 MiB)"),
    "max_pixels": (
        int,
        "largest image to decode, width × height; a JPEG counts at the size "
        "it decodes to, drafted toward the model's input (default 12M)",
    ),
    "max_request_pixels": (int, "pixels decoded for one request, all images (default 48M)"),
    "max_decodes": (int, "images decoded at once per worker: bounds memory (default 2)"),
    "max_in_flight": (int, "requests processed at once per worker; beyond: 503 (default 64)"),
    "read_timeout_s": (float, "longest wait for headers or the next body piece: 408 (default 10)"),
    "request_timeout_s": (
        float,
        "deadline of a /predict from headers to answer: 408 or 504 (default 30)",
    ),
    "drain_s": (float, "on SIGTERM, time for requests in flight to finish (default 10)"),
    "top_k": (int, "classes returned by default (default 5)"),
    "model_root": (
        str,
        "/reload loads only under this folder (default: the folder holding --model's experiment)",
    ),
    "ray_gpus": (float, "GPU share per Ray Serve replica with --device cuda (default 0.25)"),
    "workers": (
        int,
        "server processes, each with its own model copy (default 1; on CPU about "
        "one per core: one process is GIL-bound)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The bearer token is read from ECAB_SERVE_TOKEN only (never a flag: argv is "
        "visible to every local user).",
    )
    for name, (kind, text) in FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=text)
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    ray = parser.add_argument_group("Ray Serve")
    ray.add_argument(
        "--ray-replicas",
        type=int,
        metavar="N",
        help="serve with N Ray Serve replicas (each reserves --threads CPUs, or 1, and "
        "--ray-gpus of a GPU when --device is cuda) behind Ray Serve's proxy on --host/--port",
    )
    ray.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="Ray cluster to join ('auto', 'host:6379'); omit: start an embedded Ray",
    )
    return parser


def parse_command(argv: list[str] | None = None) -> tuple[ServeSettings, str, RayOptions | None]:
    """Settings from env + flags (flags win), uvicorn's log level, and how to run on Ray."""
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k in FLAGS and v is not None}
    try:
        settings = ServeSettings(**overrides)
        ray = RayOptions.from_flags(args.ray_replicas, args.ray_address, settings)
    except (ValidationError, ValueError) as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
    return settings, args.log_level, ray


def parse_args(argv: list[str] | None = None) -> tuple[ServeSettings, str]:
    """Settings from env + flags (flags win), and uvicorn's log level."""
    settings, log_level, _ = parse_command(argv)
    return settings, log_level


def main(argv: list[str] | None = None) -> int:
    from serve.inference import resolve_checkpoint
    from serve.tracking import configure_access_log

    settings, log_level, ray = parse_command(argv)
    configure_access_log(log_level)
    if settings.model is None:
        print(
            "serve: no model given (--model or ECAB_SERVE_MODEL); starting not ready, "
            "POST /reload to load one",
            file=sys.stderr,
        )
    else:
        # Fail here, in one line, rather than with a traceback from the app's start-up.
        try:
            read_meta(resolve_checkpoint(settings.model))
        except CheckpointError as exc:
            print(f"serve: error: {exc}", file=sys.stderr)
            return 2
    if ray is not None:
        from ecab_tune.cluster import ClusterJoinError
        from serve.ray_deployment import run_on_ray

        try:
            run_on_ray(settings, ray, log_level)
        except ClusterJoinError as exc:
            print(f"serve: error: {exc}", file=sys.stderr)
            return 2
        return 0
    if settings.workers > 1:
        from serve.workers import run_workers

        try:
            return run_workers(settings, log_level)
        except OSError as exc:
            print(f"serve: error: {exc}", file=sys.stderr)
            return 2
    from serve.app import create_app
    from serve.http_server import serve_forever

    serve_forever(create_app(settings), settings, log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
