"""What a search space's values must be to make runs, in the words of the modules that take
them: the model registry (its models, attentions and their options, a model built on the meta
device) and `TrainConfig`. `schema` calls these from its sections' validators."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ecab_tune.config import TrainConfig
from ecab_tune.models import ModelConfig
from ecab_tune.models.registry import check_option_names


class KeyedError(ValueError):
    """A problem at `key`, below the section being validated."""

    def __init__(self, key: str, problem: str):
        super().__init__(problem)
        self.key = key


def member(value: Any, allowed: Iterable[Any]) -> Any:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")
    return value


def check_train(values: dict[str, Any], epochs: int) -> None:
    """The recipe values build a TrainConfig of `epochs` (its own checks, in its own words)."""
    try:
        TrainConfig(**{**values, "epochs": epochs})
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from exc


_BUILT: dict[str, str | None] = {}  # a space is loaded many times a run: each model built once


def check_builds(model: str, attention: str, options: dict[str, Any], width: Any) -> None:
    """The model builds: every option value checked by the module that takes it, on the meta
    device (shapes only, no memory, no init cost: ~35 ms for resnet20)."""
    key = repr((model, attention, sorted(options.items()), width))
    if key not in _BUILT:
        try:
            with torch.device("meta"):
                ModelConfig(model, attention, options, width, num_classes=10, in_chans=3).build()
            _BUILT[key] = None
        except (TypeError, ValueError) as exc:
            _BUILT[key] = str(exc)
    if _BUILT[key] is not None:
        raise ValueError(f"{attention} on {model}: {_BUILT[key]}")


def check_option(key: str, option: str, attention: str) -> None:
    try:
        check_option_names(attention, [option])  # the registry's word, not a list kept here
    except ValueError as exc:
        raise KeyedError(key, str(exc)) from exc
