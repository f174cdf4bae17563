"""`python -m serve --model PATH`: serve a checkpoint (or an experiment's best) with uvicorn.

With `--ray-replicas N` the same app runs as N Ray Serve replicas behind Ray Serve's HTTP proxy,
on an embedded Ray or on the cluster `--ray-address` names.
Every flag defaults to its `ECAB_SERVE_*` environment variable, then to the built-in default.
"""

from __future__ import annotations

import argparse
import sys
from types import NoneType
from typing import Any, get_args

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from ecab_tune.checkpoint import CheckpointError, read_meta
from ecab_tune.config import command_parser
from ecab_tune.device import DeviceError, resolve_device
from serve.settings import NOT_FLAGS, RayOptions, ServeSettings


def flag_fields() -> dict[str, FieldInfo]:
    """Every setting a flag may set: ServeSettings' fields, help, defaults and checks included."""
    return {n: f for n, f in ServeSettings.model_fields.items() if n not in NOT_FLAGS}


def flag_help(field: FieldInfo) -> str:
    """The field's description, then its built-in default (a None default is described in it)."""
    text = field.description or ""
    if field.default is not None:
        default = field.default
        shown = f"{default:,}" if isinstance(default, int) and default >= 10_000 else default
        text += f" (default: {shown:g})" if isinstance(shown, float) else f" (default: {shown})"
    return text.replace("%", "%%")  # argparse formats help strings with %


def flag_type(field: FieldInfo) -> type:
    """`int | None` → int: argparse converts, pydantic then validates the ranges."""
    (kind,) = [t for t in get_args(field.annotation) or (field.annotation,) if t is not NoneType]
    return kind


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "python -m serve",
        __doc__,
        "python -m serve --model runs/quickstart/best",
        "python -m serve --model runs/quickstart --ray-replicas 2",
        note="The bearer token is read from ECAB_SERVE_TOKEN only (never a flag: argv is "
        "visible to every local user).",
    )
    for name, field in flag_fields().items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=flag_type(field),
            help=flag_help(field),
        )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default: info)")
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
    overrides = {k: v for k, v in vars(args).items() if k in flag_fields() and v is not None}
    try:
        settings = ServeSettings(**overrides)
        ray = RayOptions.from_flags(args.ray_replicas, args.ray_address, settings)
    except ValidationError as exc:
        from serve.errors import describe_validation  # FastAPI's import, on this path only

        # One line in flag terms (`--max-batch: ...`), whether a flag or ECAB_SERVE_* set it.
        parser.error(describe_validation([_in_flag_terms(e) for e in exc.errors()]))
    except ValueError as exc:
        parser.error(str(exc))
    return settings, args.log_level, ray


def _in_flag_terms(error: dict[str, Any]) -> dict[str, Any]:
    """A settings error located by its flag, or by its variable for a setting without one
    (whose value, the token's, is not echoed)."""
    name = str(error["loc"][0])
    if name in NOT_FLAGS:
        shown = {k: v for k, v in error.items() if k != "input"}
        return {**shown, "loc": [f"ECAB_SERVE_{name.upper()}"]}
    return {**error, "loc": ["--" + name.replace("_", "-")]}


def parse_args(argv: list[str] | None = None) -> tuple[ServeSettings, str]:
    """Settings from env + flags (flags win), and uvicorn's log level."""
    settings, log_level, _ = parse_command(argv)
    return settings, log_level


def main(argv: list[str] | None = None) -> int:
    from serve.model import resolve_checkpoint
    from serve.tracking import configure_access_log

    settings, log_level, ray = parse_command(argv)
    configure_access_log(log_level)
    if ray is None:  # a Ray replica gets its GPU from Ray, on whichever node it runs
        try:
            resolve_device(settings.device)
        except DeviceError as exc:
            print(f"serve: error: {exc}", file=sys.stderr)
            return 2
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
        from serve.runners.ray_replicas import run_on_ray

        try:
            run_on_ray(settings, ray, log_level)
        except ClusterJoinError as exc:
            print(f"serve: error: {exc}", file=sys.stderr)
            return 2
        return 0
    if settings.workers > 1:
        from serve.runners.supervisor import run_workers

        try:
            return run_workers(settings, log_level)
        except OSError as exc:
            print(f"serve: error: {exc}", file=sys.stderr)
            return 2
    from serve.app import create_app
    from serve.runners.process import serve_forever

    serve_forever(create_app(settings), settings, log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
