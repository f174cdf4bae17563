"""Models by name (`@register_model`, `create_model`, `list_models`) and `ModelConfig`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ecab_tune.models.factory import attention_options, list_attentions
from ecab_tune.models.init import init_weights

_MODELS: dict[str, Callable[..., nn.Module]] = {}
# Every architecture takes these besides its attention options.
COMMON_PARAMS = frozenset({"num_classes", "in_chans", "width"})


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def _lookup(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[name]


def model_params(name: str, attention: str) -> set[str]:
    """Keyword arguments `create_model(name, attention, ...)` accepts."""
    _lookup(name)
    return set(COMMON_PARAMS) | attention_options(attention)


def create_model(
    name: str,
    attention: str = "none",
    *,
    width: float = 1.0,
    num_classes: int = 10,
    in_chans: int = 3,
    seed: int = 0,
    **attention_kwargs: Any,
) -> nn.Module:
    """Build `name` with `attention` in every block, initialised from `seed` (every variant
    built from one seed shares its trunk's weights); bad combinations raise `ValueError`."""
    model = _lookup(name)(
        attention=attention,
        width=width,
        num_classes=num_classes,
        in_chans=in_chans,
        **attention_kwargs,
    )
    return init_weights(model, seed)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored in every checkpoint as JSON."""

    name: str
    attention: str = "none"
    attention_kwargs: dict[str, Any] = field(default_factory=dict)
    width: float = 1.0
    num_classes: int = 10
    in_chans: int = 3

    def __post_init__(self) -> None:
        _lookup(self.name)
        if self.attention not in list_attentions():
            raise ValueError(
                f"unknown attention {self.attention!r}; available: {', '.join(list_attentions())}"
            )

    def build(self, seed: int = 0) -> nn.Module:
        return create_model(
            self.name,
            self.attention,
            width=self.width,
            num_classes=self.num_classes,
            in_chans=self.in_chans,
            seed=seed,
            **self.attention_kwargs,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"unknown model config key(s): {', '.join(unknown)}")
        return cls(**raw)
