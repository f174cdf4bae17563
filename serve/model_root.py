"""The folder outside which `/reload` loads nothing, and how paths are named to clients."""

from __future__ import annotations

from pathlib import Path

from ecab_tune import checkpoint
from ecab_tune.experiment import EXPORT_DIR
from serve.errors import Forbidden


def default_root(model: str | None) -> Path | None:
    """The folder holding `--model`'s experiment: `runs/` for `runs/exp` or `runs/exp/best`."""
    if model is None:
        return None
    folder = Path(model).expanduser().resolve()
    if folder.name == EXPORT_DIR and (folder / checkpoint.META).is_file():
        return folder.parent.parent  # an experiment's export: the experiments folder
    return folder.parent


def within(root: Path | None, path: str) -> str:
    """`path` (relative ones are taken from `root`) if it lies under `root`, else 403."""
    if root is None:
        raise Forbidden(
            "this server has no model root, so /reload loads nothing: start it with "
            "--model or --model-root"
        )
    target = (root / Path(path).expanduser()).resolve()  # an absolute path replaces root
    if not target.is_relative_to(root.resolve()):
        raise Forbidden(f"{path} is outside the model root; only checkpoints under it load")
    return str(target)


def display_name(root: Path | None, folder: Path) -> str:
    """A checkpoint as clients see it: relative to the root, never an absolute path."""
    if root is not None and folder.is_relative_to(root.resolve()):
        return str(folder.relative_to(root.resolve())) or "."
    return folder.name
