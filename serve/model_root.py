"""The folder outside which `/reload` loads nothing, and how paths are named to clients."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ecab_tune import checkpoint
from ecab_tune.checkpoint import CheckpointError
from ecab_tune.experiment import EXPORT_DIR
from serve.errors import Forbidden, InvalidInput
from serve.model import resolve_checkpoint


def default_root(model: str | None) -> Path | None:
    """The folder holding `--model`'s experiment: `runs/` for `runs/exp` or `runs/exp/best`."""
    if model is None:
        return None
    folder = Path(model).expanduser().resolve()
    if folder.name == EXPORT_DIR and (folder / checkpoint.META).is_file():
        return folder.parent.parent  # an experiment's export: the experiments folder
    return folder.parent


def within(root: Path | None, path: str) -> str:
    """`path` (relative ones are taken from `root`) if it, and the checkpoint it names, lie
    under `root`, else 403; a string that is no usable path is a 422."""
    if root is None:
        raise Forbidden(
            "this server has no model root, so /reload loads nothing: start it with "
            "--model or --model-root"
        )
    refused = Forbidden(f"{path} is outside the model root; only checkpoints under it load")
    try:
        target = (root / path).resolve()  # an absolute path replaces root; no ~: a client's
        if not target.is_relative_to(root.resolve()):
            raise refused
        # An experiment folder loads its best/, which may itself be a link out of the root.
        with contextlib.suppress(CheckpointError):  # loading says why it is no checkpoint
            if not resolve_checkpoint(target).resolve().is_relative_to(root.resolve()):
                raise refused
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a name too long, a loop
        raise InvalidInput(f"{path[:200]!r} is not a usable path: {exc}") from exc
    return str(target)


def display_name(root: Path | None, folder: Path) -> str:
    """A checkpoint as clients see it: relative to the root, never an absolute path."""
    if root is not None and folder.is_relative_to(root.resolve()):
        return str(folder.relative_to(root.resolve())) or "."
    return folder.name
