"""`python -m ecab_tune.train`: train one configuration and save a checkpoint.

Prints a line per epoch; `--resume` continues the checkpoint in `--out` exactly, with the
model, data and recipe it was saved with (flags that contradict them are refused; `--data-dir`
and `--download` may change: they say where the data is, not which).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from ecab_tune import checkpoint
from ecab_tune.config import (
    DATA_LOCATION,
    DataConfig,
    TrainConfig,
    add_arguments,
    command_parser,
    from_args,
    from_dict,
    given_flags,
    out_folder,
    to_dict,
)
from ecab_tune.data import DataInfo, DatasetNotFoundError, load_data
from ecab_tune.device import choose_precision, resolve_device
from ecab_tune.engine import make_trainer, run_metrics, save_trainer
from ecab_tune.models import ModelConfig
from ecab_tune.reporting.cost import count_params


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "python -m ecab_tune.train",
        __doc__,
        "python -m ecab_tune.train --model resnet20 --attention ecab --epochs 10",
        "python -m ecab_tune.train --out runs/train/latest --resume",
    )
    add_arguments(parser, ModelConfig, skip=("num_classes", "in_chans"))  # from the data
    add_arguments(parser, DataConfig)
    add_arguments(parser, TrainConfig)
    run = parser.add_argument_group("run")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    run.add_argument(
        "--out",
        type=out_folder,
        default="runs/train/latest",
        help="checkpoint folder (default: %(default)s)",
    )
    run.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    return parser


def resumed_configs(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    meta: checkpoint.Meta,
    out: Path,
    argv: list[str],
) -> tuple[ModelConfig, DataConfig, TrainConfig]:
    """The configs `out` was saved with; a flag given that contradicts them is refused, even one
    typed at its default value."""
    if meta.train is None or "data_config" not in meta.extra:
        raise checkpoint.CheckpointError(
            f"{out} was not saved by python -m ecab_tune.train, so it cannot be resumed here"
        )
    try:
        data = from_dict(DataConfig, meta.extra["data_config"], what="data_config")
    except (KeyError, TypeError, ValueError) as exc:
        raise checkpoint.CheckpointError(f"{out}/{checkpoint.META} is malformed: {exc}") from exc
    data = dataclasses.replace(data, **{k: getattr(args, k) for k in DATA_LOCATION})
    given = given_flags(parser, argv) - set(DATA_LOCATION)
    flags = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    for saved in (meta.model, data, meta.train):
        for f in dataclasses.fields(saved):
            if f.name not in given:
                continue
            value = getattr(args, f.name)
            if isinstance(getattr(saved, f.name), dict):  # repeated KEY=VALUE pairs
                value = dict(value)
            if value != getattr(saved, f.name):
                raise ValueError(
                    f"--resume continues {out} as it was saved: {flags[f.name]} {value} "
                    f"contradicts its {getattr(saved, f.name)} (leave the flag out)"
                )
    return meta.model, data, meta.train


def check_same_data(out: Path, dataset: str, info: DataInfo, saved: DataInfo) -> None:
    """A resumed run must read the data it was saved with: an image folder that gained a class
    or other images since would meet a head of another width, or other normalisation."""
    if info != saved:
        name = next(
            f.name
            for f in dataclasses.fields(info)
            if getattr(info, f.name) != getattr(saved, f.name)
        )
        raise ValueError(
            f"--resume continues {out} as it was saved, but {dataset} is not the data it "
            f"trained on: its {name}: {getattr(info, name)}, the checkpoint's: "
            f"{getattr(saved, name)}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    out = args.out
    saved = None
    try:
        if args.resume:
            saved = checkpoint.read_meta(out)
            model_cfg, data_cfg, train_cfg = resumed_configs(parser, args, saved, out, argv)
        else:
            data_cfg, train_cfg = from_args(DataConfig, args), from_args(TrainConfig, args)
            model_cfg = from_args(ModelConfig, args)  # unknown attention options fail here
        device = resolve_device(args.device)
        choose_precision(device, train_cfg.precision)  # a bad pairing fails here, in one line
        splits = load_data(data_cfg, train_cfg.seed)
        if saved is not None:
            check_same_data(out, data_cfg.dataset, splits.info, saved.data)
        model_cfg = dataclasses.replace(
            model_cfg, num_classes=len(splits.info.classes), in_chans=splits.info.channels
        )
        model_cfg.build()  # option values (fusion, layers) are checked here, before any work
        trainer = make_trainer(  # a split too small for a batch fails here
            model_cfg, splits, train_cfg, device, resume_from=out if args.resume else None
        )
    except (ValueError, DatasetNotFoundError) as exc:  # CheckpointError is a ValueError
        parser.error(str(exc))
    print(
        f"[train] {model_cfg.name}+{model_cfg.attention} on {data_cfg.dataset} "
        f"({len(splits.train)} train, {len(trainer.eval_split)} val) on {device}; "
        f"{count_params(trainer.model):,} params",
        flush=True,
    )
    if splits.val is None:
        print(
            "[train] note: no validation split (--val-fraction 0): the test split stands in",
            flush=True,
        )
    if not args.resume and (out / checkpoint.META).is_file():
        # Said before the first epoch ends: until then the old checkpoint is still whole.
        print(
            f"[train] note: the first epoch replaces the checkpoint in {out} "
            "(--resume continues it; another --out keeps it)",
            flush=True,
        )

    def on_epoch(result: Any) -> None:
        print(result.line(train_cfg.epochs), flush=True)
        save_trainer(out, trainer, model_cfg, extra={"data_config": to_dict(data_cfg)})

    fit = trainer.fit(on_epoch)
    metrics = run_metrics(trainer, fit)
    save_trainer(out, trainer, model_cfg, metrics, extra={"data_config": to_dict(data_cfg)})
    print(f"[train] {fit.status}: test_acc {metrics['test_acc']:.2%}  checkpoint {out}")
    return 0 if fit.status != "diverged" else 1


if __name__ == "__main__":
    sys.exit(main())
