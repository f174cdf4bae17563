"""Attention by name: the table a config string is looked up in, and the one constructor.

A search space or checkpoint names a variant (`"ecab"`) and options (`fusion=concat`); it never
imports a class. `bridge` is ECAB with its layer selection and fusion fixed to BA-Net's; `bav2`
is BA-Net v2's gate on the same layers.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from ecab_tune.models.attention import CBAM, ECA, AttentionModule, SqueezeExcite
from ecab_tune.models.bridge import (
    AdaptiveBridgeAttention,
    BridgeAttention,
    Layer,
    check_layers,
    select_layers,
)

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


def _lookup(name: str) -> tuple[type[AttentionModule] | None, dict[str, Any]]:
    if name not in ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}; available: {', '.join(ATTENTIONS)}")
    return ATTENTIONS[name]


def attention_options(name: str) -> set[str]:
    """Options a user may set for attention `name` (for `bridge`/`bav2`: only the width)."""
    cls, preset = _lookup(name)
    if cls is None:
        return set()
    options = set(inspect.signature(cls).parameters) - set(_INTERNAL)
    if cls.uses_descriptors:
        options.add("layers")
    return options - set(preset) if name in FIXED_PRESETS else options


def resolved_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every option attention `name` is built with: its defaults and preset, then `options`."""
    cls, preset = _lookup(name)
    if cls is None:
        return {}
    defaults = {
        k: p.default
        for k, p in inspect.signature(cls).parameters.items()
        if k not in _INTERNAL and p.default is not inspect.Parameter.empty
    }
    return {**defaults, **preset, **options}


def check_options(name: str, options: dict[str, Any]) -> None:
    allowed = attention_options(name)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"attention {name!r} takes no option {unknown[0]!r}; "
            f"it takes: {', '.join(sorted(allowed)) or 'none'}"
        )
    if "layers" in options:
        check_layers(options["layers"])


def create_attn(
    name: str, channels: int, table: Sequence[Layer] = (), where: str = "", **options: Any
) -> tuple[AttentionModule | None, tuple[int, ...]]:
    """The gate of one block and the indices into `table` (the network's conv outputs so far,
    the block's own last) of the descriptors it reads."""
    check_options(name, options)
    cls, preset = _lookup(name)
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
