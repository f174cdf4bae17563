"""Validated run configuration, built once at the edge (CLI, YAML, HTTP) and passed inward."""

from __future__ import annotations

import argparse
import dataclasses
import math
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml


def option_help(
    text: str,
    *,
    flag: str | None = None,
    choices: Callable[[], Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Field metadata `add_arguments` reads: the help line, a flag other than `--field-name`,
    and the allowed values (a function: registries fill up at import time)."""
    return {"help": text, "flag": flag, "choices": choices}


# Where the data lies and whether to fetch it, not which data: no part of what a run is (a
# resumed run or a study may move between machines).
DATA_LOCATION = ("data_dir", "download")

SEEDS = 2**32  # numpy's RandomState, which Optuna's samplers seed: 0 <= seed < 2**32


@dataclass(frozen=True)
class DataConfig:
    """Which data a run trains on; mirrors `ecab_tune.data.load_dataset`."""

    dataset: str = field(
        default="fashion-mnist",
        metadata=option_help("cifar10, cifar100, fashion-mnist or imagefolder:PATH"),
    )
    data_dir: str = field(
        default="data", metadata=option_help("folder that holds or receives datasets")
    )
    download: bool = field(default=False, metadata=option_help("download the dataset when absent"))
    subset: int | None = field(
        default=None, metadata=option_help("train on a stratified subset of N images")
    )
    val_fraction: float = field(
        default=0.1,
        metadata=option_help("stratified share of train held out for validation (0: none)"),
    )
    image_size: int = field(
        default=32, metadata=option_help("side length for imagefolder datasets")
    )

    def __post_init__(self) -> None:
        check_types(self)
        _check(self.subset is None or self.subset > 0, "subset", self.subset, "a positive count")
        _check(0.0 <= self.val_fraction < 1.0, "val_fraction", self.val_fraction, "0 <= f < 1")
        _check(self.image_size >= 8, "image_size", self.image_size, ">= 8")


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe: optimiser, schedule, regularisation and numerics."""

    epochs: int = field(default=10, metadata=option_help("epochs to train"))
    batch_size: int = field(default=128, metadata=option_help("training batch size"))
    lr: float = field(default=0.1, metadata=option_help("peak learning rate (after warm-up)"))
    momentum: float = field(default=0.9, metadata=option_help("SGD momentum"))
    nesterov: bool = field(default=True, metadata=option_help("use Nesterov momentum"))
    weight_decay: float = field(default=5e-4, metadata=option_help("L2 on conv/linear weights"))
    label_smoothing: float = field(default=0.0, metadata=option_help("label smoothing in [0, 1)"))
    schedule: Literal["onecycle", "cosine"] = field(
        default="onecycle",
        metadata=option_help("after warm-up: linear decay (onecycle) or cosine decay to 0"),
    )
    warmup_epochs: float = field(
        default=1.0, metadata=option_help("linear warm-up length in epochs")
    )
    seed: int = field(
        default=0, metadata=option_help("seed for initialisation, order and augmentation")
    )
    eval_batch_size: int = field(default=1024, metadata=option_help("batch size for evaluation"))
    precision: Literal["auto", "bf16", "fp16", "fp32"] = field(
        default="auto",
        metadata=option_help(
            "auto: bf16 on compute capability 8.0+, fp16 on older GPUs, fp32 on CPU"
        ),
    )
    channels_last: bool = field(
        default=True, metadata=option_help("channels_last memory (CUDA only)")
    )
    compile: bool = field(
        default=False,
        metadata=option_help("CUDA: torch.compile the model (same outputs, fused kernels)"),
    )
    cuda_graphs: bool = field(
        default=False,
        metadata=option_help(
            "capture each training step as one CUDA graph (CUDA, fp32/bf16): small models are "
            "launch-bound on GPUs"
        ),
    )
    deterministic: bool = field(
        default=False,
        metadata=option_help("bit-exact CUDA kernels (slower); off: cuDNN autotuning"),
    )

    def __post_init__(self) -> None:
        check_types(self)
        _check(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        _check(0 <= self.seed < SEEDS, "seed", self.seed, "0 <= seed < 2**32")
        _check(self.batch_size >= 2, "batch_size", self.batch_size, ">= 2 (BatchNorm)")
        _check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, ">= 1")
        _check(0.0 < self.lr < 10.0 and math.isfinite(self.lr), "lr", self.lr, "0 < lr < 10")
        _check(0.0 <= self.momentum < 1.0, "momentum", self.momentum, "0 <= m < 1")
        _check(self.weight_decay >= 0.0, "weight_decay", self.weight_decay, ">= 0")
        _check(0.0 <= self.label_smoothing < 1.0, "label_smoothing", self.label_smoothing, "[0, 1)")
        _check(
            0.0 <= self.warmup_epochs <= self.epochs,
            "warmup_epochs",
            self.warmup_epochs,
            "0 <= warmup_epochs <= epochs",
        )
        _check(
            not (self.nesterov and self.momentum == 0.0),
            "nesterov",
            self.nesterov,
            "False when momentum is 0",
        )
        _check(
            not (self.cuda_graphs and self.compile),
            "cuda_graphs",
            self.cuda_graphs,
            "False with compile (choose one)",
        )


def _check(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: expected {allowed}")


def is_int(value: object) -> bool:
    """An int, not a bool (YAML's `true` would pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A finite int or float, not a bool."""
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


# A field's type as a test and the words for it. YAML and JSON files (a search space, a study,
# search.json) can say `batch_size: 64.5` or `nesterov: 'false'`: range checks let the first
# fail in every trial and the second train as True.
_TYPE_CHECKS: dict[Any, tuple[Callable[[object], bool], str]] = {
    int: (is_int, "an integer"),
    float: (is_real, "a finite number"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    str: (lambda v: isinstance(v, str), "a string"),
}


def check_types(config: Any) -> None:
    """Each field of dataclass `config` of its annotated type: int, float (an int too), bool,
    str, one of a Literal's values, or any of these or None."""
    for name, hint in typing.get_type_hints(type(config)).items():
        value = getattr(config, name)
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        options = typing.get_args(hint) if union else (hint,)
        if value is None and type(None) in options:
            continue
        for option in options:
            if typing.get_origin(option) is Literal:
                allowed = [str(a) for a in typing.get_args(option)]
                ok, words = value in allowed, " or ".join([", ".join(allowed[:-1]), allowed[-1]])
                words = words.removeprefix(" or ")  # a Literal of one value
            elif option in _TYPE_CHECKS:
                test, words = _TYPE_CHECKS[option]
                ok = test(value)
            else:
                continue
            _check(ok, name, value, words)


C = TypeVar("C")


def to_dict(cfg: object) -> dict[str, Any]:
    return dataclasses.asdict(cfg)  # type: ignore[call-overload]


def from_dict(cls: type[C], raw: Mapping[str, Any], *, what: str = "", where: str = "") -> C:
    """Build dataclass `cls` from a mapping (YAML, JSON), strictly and in the user's terms.

    A non-mapping is a TypeError, an unknown key a ValueError, a missing required key a KeyError;
    a list becomes a tuple where the field is a tuple (JSON has no tuples).
    """
    what = what or cls.__name__
    place = f" in {where}" if where else ""
    if not isinstance(raw, Mapping):
        raise TypeError(f"{what}{place} must be a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(
            f"unknown {what} key(s){place}: {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(known))}"
        )
    missing = [n for n, f in known.items() if n not in raw and _required(f)]
    if missing:
        raise KeyError(f"{what}{place} lacks key(s): {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    values = dict(raw)
    for name, value in values.items():
        if typing.get_origin(hints[name]) is tuple:
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{what} {name!r} must be a list, got {value!r}")
            values[name] = tuple(value)
    return cls(**values)


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def command_parser(prog: str, doc: str, *examples: str, note: str = "") -> argparse.ArgumentParser:
    """A command's parser: its module docstring as the description, then `note` and examples."""
    epilog = [textwrap.fill(note, 96)] if note else []
    if examples:
        epilog.append("Examples:\n" + "\n".join(f"  {example}" for example in examples))
    return argparse.ArgumentParser(
        prog=prog,
        description=doc.strip(),
        epilog="\n\n".join(epilog) or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def out_folder(text: str) -> Path:
    """`type=` of an `--out` flag: a folder to write into, absent or a folder, checked before
    any work (a path under a file could never be created: its first save would fail)."""
    path = Path(text)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise argparse.ArgumentTypeError(
                    f"{part} is a file; expected a folder (or none yet)"
                )
            break
    return path


def parse_option(item: str) -> tuple[str, Any]:
    """One `KEY=VALUE`; the value is read as a YAML scalar (3 → int, true → bool, sum → str)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"{item!r}: the value is not YAML ({exc})") from exc


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()
) -> None:
    """Add one `--flag` per dataclass field, typed and documented from the field itself.

    The default is appended to the help unless the help already says what the default means;
    a `dict` field becomes a repeatable `--flag KEY=VALUE`.
    """
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        help_text = f.metadata.get("help", "")
        if "(default" not in help_text and f.default is not MISSING:
            help_text += " (default: %(default)s)"
        common: dict[str, Any] = {"dest": f.name, "help": help_text}
        if kind is bool:
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, **common
            )
            continue
        if typing.get_origin(kind) is dict:
            group.add_argument(
                flag, action="append", type=parse_option, metavar="KEY=VALUE", **common
            )
            continue
        choices = f.metadata["choices"]() if f.metadata.get("choices") else None
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None: a flag of X
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if typing.get_origin(kind) is Literal:
            choices, kind = typing.get_args(kind), str
        group.add_argument(flag, type=kind, choices=choices, default=f.default, **common)


_ABSENT = object()


def given_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests of the flags `argv` names, whatever their values: a flag typed at its default
    value is given all the same. (argparse sets a default only where the namespace lacks the
    attribute; a repeatable flag's default, None, already tells it apart.)"""
    probe = argparse.Namespace(
        **{
            a.dest: _ABSENT
            for a in parser._actions
            if a.option_strings and not isinstance(a, argparse._AppendAction)
        }
    )
    parsed = vars(parser.parse_args(argv, probe))
    return {dest for dest, value in parsed.items() if value is not _ABSENT and value is not None}


def from_args(cls: type[C], args: argparse.Namespace) -> C:
    """`cls` from the flags `add_arguments` added (repeated `KEY=VALUE` pairs as a dict)."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            is_dict = typing.get_origin(hints[f.name]) is dict
            values[f.name] = dict(value or ()) if is_dict else value
    return cls(**values)
