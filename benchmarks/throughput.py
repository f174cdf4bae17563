"""Training throughput: our on-device tensor pipeline vs. a torchvision DataLoader + PIL pipeline.

Three measurements on the same model, optimiser step and machine, side by side in one run:
  limit      - the training step alone, on one pre-made batch (no data work at all)
  ours       - `iterate_batches` (uint8 tensor, batched crop/flip/normalise) + the same step
  reference  - torchvision-style Dataset (PIL image per sample, RandomCrop, RandomHorizontalFlip,
               ToTensor, Normalize) + DataLoader, best of num_workers 0 and 2, + the same step
  graphs     - (--cuda-graphs, on a GPU) ours with each step replayed as one CUDA graph
Prints images/s, the pipeline overhead of ours vs. the limit, and ours / reference.

    python benchmarks/throughput.py --model resnet20 --attention ecab --steps 40
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from collections.abc import Iterable

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from ecab_tune.config import TrainConfig
from ecab_tune.data import Split, iterate_batches, load_dataset
from ecab_tune.device import resolve_device
from ecab_tune.engine import Trainer
from ecab_tune.models import ModelConfig


class PilDataset(Dataset):
    """What torchvision's MNIST-family datasets do per item: uint8 array -> PIL -> transforms."""

    def __init__(self, split: Split, transform: transforms.Compose):
        self.images = (
            split.images.squeeze(1).numpy()
            if split.images.shape[1] == 1
            else split.images.permute(0, 2, 3, 1).numpy()
        )
        self.labels = split.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def time_steps(
    trainer: Trainer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    warmup: int = 3,
) -> float:
    """Images/s over `steps` training steps after `warmup` untimed ones."""
    trainer.model.train()
    it = iter(batches)
    for images, labels in itertools.islice(it, warmup):
        trainer.train_step(images.to(trainer.device), labels.to(trainer.device))
    seen, start = 0, time.perf_counter()
    for images, labels in itertools.islice(it, steps):
        loss, _ = trainer.train_step(
            images.to(trainer.device, non_blocking=True),
            labels.to(trainer.device, non_blocking=True),
        )
        seen += len(labels)
    loss.item()  # wait for queued GPU work before stopping the clock
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--attention", default="ecab")
    parser.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="auto, bf16, fp16 or fp32")
    parser.add_argument(
        "--skip-reference", action="store_true", help="only the limit and our pipeline"
    )
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="also ours with CUDA-graph steps (GPU)"
    )
    args = parser.parse_args()

    device = resolve_device(args.device)
    splits = load_dataset(args.dataset, subset=args.batch_size * (args.steps + 10) * 2)
    info = splits.info
    model_cfg = ModelConfig(
        args.model,
        args.attention,
        width=args.width,
        num_classes=len(info.classes),
        in_chans=info.channels,
    )
    cfg = TrainConfig(
        epochs=1, batch_size=args.batch_size, warmup_epochs=0.0, precision=args.precision
    )
    trainer = Trainer(model_cfg.build(seed=0), splits, cfg, device)
    n = args.steps + 3

    def ours() -> Iterable:
        return iterate_batches(
            trainer.splits.train,
            info,
            args.batch_size,
            train=True,
            generator=torch.Generator().manual_seed(0),
            channels_last=trainer.channels_last,
        )

    one = next(iter(ours()))
    limit = time_steps(trainer, itertools.repeat(one, n), args.steps)
    ours_ips = time_steps(trainer, ours(), args.steps)
    pil = transforms.Compose(
        [
            transforms.RandomCrop((info.height, info.width), padding=info.crop_padding),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(info.mean, info.std),
        ]
    )
    print(
        f"{args.model}+{args.attention} (width {args.width}), {args.dataset}, "
        f"batch {args.batch_size}, {args.steps} steps, device {device}"
        f"{f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''}, "
        f"precision {trainer.precision}, torch threads {torch.get_num_threads()}"
    )
    print(f"{'pipeline':<34}{'images/s':>10}")
    print(f"{'limit (one pre-made batch)':<34}{limit:>10,.0f}")
    print(f"{'ours (on-device tensors)':<34}{ours_ips:>10,.0f}")
    print(f"pipeline overhead vs limit: {1 - ours_ips / limit:+.1%}  (target <= 5%)")
    if args.cuda_graphs and device.type == "cuda":
        graphed_cfg = dataclasses.replace(cfg, cuda_graphs=True)
        trainer = Trainer(model_cfg.build(seed=0), splits, graphed_cfg, device)
        graphs = time_steps(trainer, ours(), args.steps)
        print(f"{'ours + CUDA graphs':<34}{graphs:>10,.0f}")
        print(f"CUDA graphs vs eager: {graphs / ours_ips:.2f}x")
    if args.skip_reference:
        return
    reference = {}
    for workers in (0, 2):
        loader = DataLoader(
            PilDataset(splits.train, pil),
            batch_size=args.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
        )
        reference[workers] = time_steps(trainer, loader, args.steps)
    best_workers = max(reference, key=reference.get)
    ref = reference[best_workers]

    for workers, value in reference.items():
        print(f"{f'reference (PIL, {workers} workers)':<34}{value:>10,.0f}")
    print(
        f"ours / reference (best, {best_workers} workers): {ours_ips / ref:.2f}x  (target >= 1.5x)"
    )


if __name__ == "__main__":
    main()
