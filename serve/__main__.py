"""`python -m serve --model PATH`: serve a checkpoint (or an experiment's best) with uvicorn.

Every flag defaults to its `ECAB_SERVE_*` environment variable, then to the built-in default.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from ecab_tune.checkpoint import CheckpointError, read_meta
from serve.settings import ServeSettings

FLAGS = {
    "model": (str, "checkpoint folder, or an experiment folder (its best/ is served)"),
    "host": (str, "interface to bind (default 127.0.0.1: loopback only)"),
    "port": (int, "TCP port (default 8000)"),
    "device": (str, "torch device (default cpu)"),
    "threads": (int, "torch intra-op threads"),
    "max_batch": (int, "most images per forward pass (default 32)"),
    "max_wait_ms": (float, "longest wait for a batch to fill (default 3)"),
    "max_images_per_request": (int, "most images in one request (default 16)"),
    "max_body_bytes": (int, "largest request body; larger gets 413 (default 10 MiB)"),
    "max_pixels": (int, "largest image, width × height (default 40M)"),
    "top_k": (int, "classes returned by default (default 5)"),
}


def parse_args(argv: list[str] | None = None) -> tuple[ServeSettings, str]:
    """Settings from env + flags (flags win), and uvicorn's log level."""
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
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k in FLAGS and v is not None}
    try:
        return ServeSettings(**overrides), args.log_level
    except ValidationError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from serve.app import create_app
    from serve.inference import resolve_checkpoint

    settings, log_level = parse_args(argv)
    if settings.model is None:
        print("serve: no model given (--model or ECAB_SERVE_MODEL); starting not ready, "
              "POST /reload to load one", file=sys.stderr)
    else:
        # Fail here, in one line, rather than with a traceback from the app's start-up.
        try:
            read_meta(resolve_checkpoint(settings.model))
        except CheckpointError as exc:
            print(f"serve: error: {exc}", file=sys.stderr)
            return 2
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
