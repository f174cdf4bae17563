"""Attention gates and models by name, and `ModelConfig`: the one place a string becomes a module.

A search space or checkpoint names a model (`"resnet20"`), a gate (`"ecab"`) and its options
(`fusion=concat`); it never imports a class. Models register themselves (`@register_model`);
attentions sit in `ATTENTIONS`. `bridge` is ECAB with its layer selection and fusion fixed to
BA-Net's; `bav2` is BA-Net v2's gate on the same layers.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ecab_tune.config import from_dict, option_help
from ecab_tune.models.attention import CBAM, ECA, AttentionModule, SqueezeExcite
from ecab_tune.models.bridge import (
    AdaptiveBridgeAttention,
    BridgeAttention,
    Layer,
    check_layers,
    select_layers,
)
from ecab_tune.models.init import GLOBAL_RNG, init_weights

# --- attention gates ----------------------------------------------------------------------

HEAD = "ecab_head"  # the study's literal variant changes the classifier, not the blocks
_INTERNAL = ("channels", "source_channels")  # supplied by the network, never by a user
ATTENTIONS: dict[str, tuple[type[AttentionModule] | None, dict[str, Any]]] = {
    "none": (None, {}),
    "se": (SqueezeExcite, {}),
    "cbam": (CBAM, {}),
    "eca": (ECA, {}),
    "bridge": (BridgeAttention, {"layers": "block", "fusion": "sum", "project": True}),
    "bav2": (AdaptiveBridgeAttention, {"layers": "block"}),
    "ecab": (BridgeAttention, {"layers": "last2"}),
    HEAD: (None, {}),
}
# Published modules whose preset is their definition: a user sets only their width options.
FIXED_PRESETS = ("bridge", "bav2")


def list_attentions() -> list[str]:
    return list(ATTENTIONS)


def _attention(name: str) -> tuple[type[AttentionModule] | None, dict[str, Any]]:
    if name not in ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}; available: {', '.join(ATTENTIONS)}")
    return ATTENTIONS[name]


def attention_options(name: str) -> set[str]:
    """Options a user may set for attention `name` (for `bridge`/`bav2`: only the width)."""
    cls, preset = _attention(name)
    if cls is None:
        return set()
    options = set(inspect.signature(cls).parameters) - set(_INTERNAL)
    if cls.uses_descriptors:
        options.add("layers")
    return options - set(preset) if name in FIXED_PRESETS else options


def resolved_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every option attention `name` is built with: its defaults and preset, then `options`."""
    cls, preset = _attention(name)
    if cls is None:
        return {}
    defaults = {
        k: p.default
        for k, p in inspect.signature(cls).parameters.items()
        if k not in _INTERNAL and p.default is not inspect.Parameter.empty
    }
    return {**defaults, **preset, **options}


def check_option_names(name: str, options: Iterable[str]) -> None:
    allowed = attention_options(name)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"attention {name!r} takes no option {unknown[0]!r}; "
            f"it takes: {', '.join(sorted(allowed)) or 'none'}"
        )


def check_options(name: str, options: Mapping[str, Any]) -> None:
    check_option_names(name, options)
    if "layers" in options:
        check_layers(options["layers"])


def create_attn(
    name: str, channels: int, table: Sequence[Layer] = (), where: str = "", **options: Any
) -> tuple[AttentionModule | None, tuple[int, ...]]:
    """The gate of one block and the indices into `table` (the network's conv outputs so far,
    the block's own last) of the descriptors it reads."""
    check_options(name, options)
    cls, preset = _attention(name)
    if cls is None:
        return None, ()
    kwargs = {**preset, **options}
    if not cls.uses_descriptors:
        return cls(channels, **kwargs), ()
    sources = select_layers(kwargs.pop("layers"), table, where)
    try:
        gate = cls(channels, [table[i].channels for i in sources], **kwargs)
    except ValueError as exc:
        raise ValueError(f"{name} at {where}: {exc}") from exc
    return gate, sources


# --- models -------------------------------------------------------------------------------

_MODELS: dict[str, Callable[..., nn.Module]] = {}
# Every architecture takes these besides its attention options.
COMMON_PARAMS = frozenset({"num_classes", "in_chans", "width"})


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def _model(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[name]


def model_params(name: str, attention: str) -> set[str]:
    """Keyword arguments `create_model(name, attention, ...)` accepts."""
    _model(name)
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
    with GLOBAL_RNG:
        model = _model(name)(
            attention=attention,
            width=width,
            num_classes=num_classes,
            in_chans=in_chans,
            **attention_kwargs,
        )
        return init_weights(model, seed)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored in every checkpoint as JSON.

    The metadata makes the train CLI's model flags (`--model`, `--attention`, `--attn`, `--width`).
    """

    name: str = field(
        default="resnet20",
        metadata=option_help("architecture", flag="--model", choices=list_models),
    )
    attention: str = field(
        default="none",
        metadata=option_help("attention module in every residual block", choices=list_attentions),
    )
    attention_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata=option_help(
            "attention option, repeatable (e.g. fusion=concat, layers=last2)", flag="--attn"
        ),
    )
    width: float = field(default=1.0, metadata=option_help("channel width multiplier"))
    num_classes: int = 10
    in_chans: int = 3

    def __post_init__(self) -> None:
        _model(self.name)
        _attention(self.attention)
        check_options(self.attention, self.attention_kwargs)

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
    def from_dict(cls, raw: Mapping[str, Any]) -> ModelConfig:
        return from_dict(cls, raw, what="model config")
