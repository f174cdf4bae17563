"""`python -m ecab_tune.export CHECKPOINT --format onnx|torchscript --out DIR`.

Writes a self-contained model: uint8 images in, logits and each attention module's channel
weights out, any batch size.
"""

from __future__ import annotations

import argparse
import sys

from ecab_tune.checkpoint import CheckpointError
from ecab_tune.config import command_parser, out_folder
from ecab_tune.export import FORMATS, SIGNATURE, ExportError, export_model


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "python -m ecab_tune.export",
        __doc__,
        "python -m ecab_tune.export runs/quickstart/best --format onnx --out exported",
    )
    parser.add_argument("checkpoint", help="a checkpoint folder, e.g. runs/<name>/best")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument(
        "--out", type=out_folder, required=True, help="folder to write the model file into"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        path = export_model(args.checkpoint, args.format, args.out)
    except (CheckpointError, ExportError) as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"[export] {args.format} -> {path} (inputs and outputs: {path.parent / SIGNATURE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
