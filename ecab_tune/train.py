"""`python -m ecab_tune.train`: train one configuration and save a checkpoint.

Prints a line per epoch; `--resume` continues the checkpoint in `--out` exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from ecab_tune.config import (
    DataConfig,
    TrainConfig,
    add_arguments,
    command_parser,
    from_args,
    to_dict,
)
from ecab_tune.data import DatasetNotFoundError, load_data
from ecab_tune.device import choose_precision, resolve_device
from ecab_tune.engine import make_trainer, run_metrics, save_trainer
from ecab_tune.models import ModelConfig


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
        "--out", default="runs/train/latest", help="checkpoint folder (default: %(default)s)"
    )
    run.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        data_cfg, train_cfg = from_args(DataConfig, args), from_args(TrainConfig, args)
        model_cfg = from_args(ModelConfig, args)  # unknown attention options fail here
        device = resolve_device(args.device)
        choose_precision(device, train_cfg.precision)  # a bad pairing fails here, in one line
        splits = load_data(data_cfg, train_cfg.seed)
        model_cfg = dataclasses.replace(
            model_cfg, num_classes=len(splits.info.classes), in_chans=splits.info.channels
        )
        model_cfg.build()  # option values (fusion, layers) are checked here, before any work
    except (ValueError, DatasetNotFoundError) as exc:
        parser.error(str(exc))
    out = Path(args.out)
    trainer = make_trainer(
        model_cfg, splits, train_cfg, device, resume_from=out if args.resume else None
    )
    print(
        f"[train] {model_cfg.name}+{model_cfg.attention} on {data_cfg.dataset} "
        f"({len(splits.train)} train, {len(trainer.eval_split)} val) on {device}; "
        f"{sum(p.numel() for p in trainer.model.parameters()):,} params",
        flush=True,
    )
    if splits.val is None:
        print(
            "[train] note: no validation split (--val-fraction 0): the test split stands in",
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
