"""`python -m ecab_tune.train`: train one configuration, print a line per epoch, save a checkpoint.

`make_trainer` and `save_trainer` are the single-run building blocks the search and the study
reuse, so there is one way to build, resume and save a run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from ecab_tune import checkpoint
from ecab_tune.config import DataConfig, TrainConfig, add_arguments, from_args, to_dict
from ecab_tune.data import DatasetNotFoundError, Splits, load_dataset
from ecab_tune.device import choose_precision, resolve_device
from ecab_tune.engine import FitResult, Trainer
from ecab_tune.models import ModelConfig, list_attentions, list_models


def load_data(cfg: DataConfig, seed: int) -> Splits:
    return load_dataset(
        cfg.dataset,
        root=cfg.data_dir,
        download=cfg.download,
        val_fraction=cfg.val_fraction,
        subset=cfg.subset,
        seed=seed,
        image_size=cfg.image_size,
    )


def make_trainer(
    model_cfg: ModelConfig,
    splits: Splits,
    train_cfg: TrainConfig,
    device: torch.device,
    resume_from: str | Path | None = None,
) -> Trainer:
    """A seeded trainer; restored exactly (weights, optimiser, data order) from `resume_from`."""
    if resume_from is not None:
        model, _ = checkpoint.load_model(resume_from)
        state = checkpoint.load_train_state(resume_from)
        if state is None:
            raise checkpoint.CheckpointError(f"{resume_from} has no resume state")
    else:
        model, state = model_cfg.build(seed=train_cfg.seed), None
    trainer = Trainer(model, splits, train_cfg, device)
    if state is not None:
        trainer.load_state_dict(state)
    return trainer


def run_metrics(trainer: Trainer, fit: FitResult) -> dict[str, Any]:
    """Summary metrics of a run; the test split is evaluated here, once, at the end."""
    last = trainer.history[-1] if trainer.history else None
    test_loss, test_acc = trainer.evaluate(trainer.splits.test)
    return {
        "status": fit.status,
        "epochs": trainer.epoch,
        "val_acc": last.val_acc if last else None,
        "val_loss": last.val_loss if last else None,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "images_per_s": last.images_per_s if last else None,
        "params": sum(p.numel() for p in trainer.model.parameters()),
    }


def save_trainer(
    folder: str | Path,
    trainer: Trainer,
    model_cfg: ModelConfig,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    with_state: bool = True,
) -> Path:
    meta = checkpoint.Meta(model_cfg, trainer.splits.info, trainer.cfg, metrics or {}, extra or {})
    return checkpoint.save(
        folder, trainer.model, meta, trainer.state_dict() if with_state else None
    )


def parse_kwargs(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs; values are read as YAML scalars (3 → int, true → bool, sum → str)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--attn expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ecab_tune.train",
        description=__doc__.splitlines()[0],
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default="resnet20",
        choices=list_models(),
        help="architecture (default: %(default)s)",
    )
    model.add_argument(
        "--attention",
        default="none",
        choices=list_attentions(),
        help="attention module in every residual block (default: %(default)s)",
    )
    model.add_argument(
        "--attn",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="attention option, repeatable (e.g. fusion=concat, layers=last2)",
    )
    model.add_argument(
        "--width", type=float, default=1.0, help="channel width multiplier (default: %(default)s)"
    )
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
        device = resolve_device(args.device)
        choose_precision(device, train_cfg.precision)  # a bad pairing fails here, in one line
        splits = load_data(data_cfg, train_cfg.seed)
        model_cfg = ModelConfig(
            args.model,
            args.attention,
            parse_kwargs(args.attn),
            args.width,
            num_classes=len(splits.info.classes),
            in_chans=splits.info.channels,
        )
        model_cfg.build()  # validate attention options before any work
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
