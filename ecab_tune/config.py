"""Validated run configuration, built once at the edge (CLI, YAML, HTTP) and passed inward."""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

SCHEDULES = ("onecycle", "cosine")


def _help(text: str, **kw: Any) -> dict[str, Any]:
    return {"help": text, **kw}


@dataclass(frozen=True)
class DataConfig:
    """Which data a run trains on; mirrors `ecab_tune.data.load_dataset`."""

    dataset: str = field(
        default="fashion-mnist",
        metadata=_help("cifar10, cifar100, fashion-mnist or imagefolder:PATH"),
    )
    data_dir: str = field(default="data", metadata=_help("folder that holds or receives datasets"))
    download: bool = field(default=False, metadata=_help("download the dataset when absent"))
    subset: int | None = field(
        default=None, metadata=_help("train on a stratified subset of N images")
    )
    val_fraction: float = field(
        default=0.1, metadata=_help("stratified share of train held out for validation (0: none)")
    )
    image_size: int = field(default=32, metadata=_help("side length for imagefolder datasets"))

    def __post_init__(self) -> None:
        _check(self.subset is None or self.subset > 0, "subset", self.subset, "a positive count")
        _check(0.0 <= self.val_fraction < 1.0, "val_fraction", self.val_fraction, "0 <= f < 1")
        _check(self.image_size >= 8, "image_size", self.image_size, ">= 8")


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe: optimiser, schedule, regularisation and numerics."""

    epochs: int = field(default=10, metadata=_help("epochs to train"))
    batch_size: int = field(default=128, metadata=_help("training batch size"))
    lr: float = field(default=0.1, metadata=_help("peak learning rate (after warm-up)"))
    momentum: float = field(default=0.9, metadata=_help("SGD momentum"))
    nesterov: bool = field(default=True, metadata=_help("use Nesterov momentum"))
    weight_decay: float = field(default=5e-4, metadata=_help("L2 on conv/linear weights"))
    label_smoothing: float = field(default=0.0, metadata=_help("label smoothing in [0, 1)"))
    schedule: Literal["onecycle", "cosine"] = field(
        default="onecycle",
        metadata=_help("after warm-up: linear decay (onecycle) or cosine decay to 0"),
    )
    warmup_epochs: float = field(default=1.0, metadata=_help("linear warm-up length in epochs"))
    seed: int = field(default=0, metadata=_help("seed for initialisation, order and augmentation"))
    eval_batch_size: int = field(default=1024, metadata=_help("batch size for evaluation"))
    precision: Literal["auto", "bf16", "fp16", "fp32"] = field(
        default="auto",
        metadata=_help("auto: bf16 on compute capability 8.0+, fp16 on older GPUs, fp32 on CPU"),
    )
    channels_last: bool = field(default=True, metadata=_help("channels_last memory (CUDA only)"))
    compile: bool = field(
        default=False, metadata=_help("torch.compile the model (same outputs, fused kernels)")
    )
    cuda_graphs: bool = field(
        default=False,
        metadata=_help(
            "capture each training step as one CUDA graph (CUDA, fp32/bf16): small models are "
            "launch-bound on GPUs"
        ),
    )
    deterministic: bool = field(
        default=False, metadata=_help("bit-exact CUDA kernels (slower); off: cuDNN autotuning")
    )

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        _check(self.batch_size >= 2, "batch_size", self.batch_size, ">= 2 (BatchNorm)")
        _check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, ">= 1")
        _check(0.0 < self.lr < 10.0 and math.isfinite(self.lr), "lr", self.lr, "0 < lr < 10")
        _check(0.0 <= self.momentum < 1.0, "momentum", self.momentum, "0 <= m < 1")
        _check(self.weight_decay >= 0.0, "weight_decay", self.weight_decay, ">= 0")
        _check(0.0 <= self.label_smoothing < 1.0, "label_smoothing", self.label_smoothing, "[0, 1)")
        _check(self.schedule in SCHEDULES, "schedule", self.schedule, " or ".join(SCHEDULES))
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


C = TypeVar("C")


def to_dict(cfg: object) -> dict[str, Any]:
    return dataclasses.asdict(cfg)  # type: ignore[call-overload]


def from_dict(cls: type[C], data: dict[str, Any], *, where: str = "") -> C:
    """Build a config dataclass from a mapping, rejecting unknown keys in the user's terms."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        place = f" in {where}" if where else ""
        raise ValueError(
            f"unknown {cls.__name__} key(s){place}: {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(names))}"
        )
    return cls(**data)


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()
) -> None:
    """Add one `--flag` per dataclass field, typed and documented from the field itself."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        help_text = f"{f.metadata.get('help', '')} (default: %(default)s)"
        if kind is bool:
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text
            )
            continue
        choices = None
        if typing.get_origin(kind) is Literal:
            choices, kind = typing.get_args(kind), str
        elif typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        group.add_argument(flag, type=kind, choices=choices, default=f.default, help=help_text)


def from_args(cls: type[C], args: argparse.Namespace) -> C:
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})
