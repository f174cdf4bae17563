"""Several trainings on one device. On a GPU: processes (they take turns on it) vs threads of one
process on their own CUDA streams (kernels of different streams can run side by side). On a CPU:
processes with cores // jobs threads each vs one process with all the cores.

Each mode trains `--jobs` copies of the same ResNet-20 step (what `compare --jobs N`, with
`--cuda-graphs` and with or without `--streams` on a GPU, runs), `--steps` steps each after a
shared start, and prints the images/s of all of them together; one copy alone is the reference.
The last line names the fastest.

    python benchmarks/sharing.py --jobs 8 --attention ecab --steps 300
    python benchmarks/sharing.py --device cpu --jobs 2 --steps 60
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing
import os
import queue
import threading
import time
from typing import Any

import torch

from ecab_tune.config import TrainConfig
from ecab_tune.data import iterate_batches, load_dataset
from ecab_tune.engine import Trainer
from ecab_tune.models import ModelConfig

BATCH = 128


def train(args: argparse.Namespace, index: int, barrier: Any, results: Any, threads: int) -> None:
    """One copy: its (start, end), or the error that stopped it (the others are released)."""
    torch.set_num_threads(threads)  # per process; for threads, the one pool they all share
    try:
        results.put(timed(args, index, barrier))
    except Exception as e:  # reported by the parent, which goes on with the next mode
        barrier.abort()  # copies waiting for this one stop instead of waiting forever
        results.put(f"{type(e).__name__}: {e}".splitlines()[0])


def timed(args: argparse.Namespace, index: int, barrier: Any) -> tuple[float, float]:
    """Build, warm up (and capture on a GPU), wait for the others, then time `steps` steps."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    splits = load_dataset("fashion-mnist", subset=BATCH * 16)
    info = splits.info
    model = ModelConfig(args.model, args.attention, num_classes=len(info.classes), in_chans=1)
    cfg = TrainConfig(
        epochs=1, batch_size=BATCH, warmup_epochs=0.0, precision="fp32", cuda_graphs=cuda
    )
    trainer = Trainer(model.build(seed=index), splits, cfg, device)
    trainer.model.train()
    batches = itertools.cycle(
        list(
            iterate_batches(
                trainer.splits.train, info, BATCH, train=True, channels_last=trainer.channels_last
            )
        )
    )
    for images, labels in itertools.islice(batches, 5):
        loss, _ = trainer.train_step(images, labels)
    loss.item()
    barrier.wait()
    start = time.perf_counter()
    for images, labels in itertools.islice(batches, args.steps):
        loss, _ = trainer.train_step(images, labels)
    loss.item()  # this stream's queued work is done
    return start, time.perf_counter()


def in_thread(
    args: argparse.Namespace, index: int, barrier: Any, results: Any, threads: int
) -> None:
    cuda = args.device == "cuda"
    with torch.cuda.stream(torch.cuda.Stream()) if cuda else contextlib.nullcontext():
        train(args, index, barrier, results, threads)


def together(args: argparse.Namespace, jobs: int, mode: str) -> float | str:
    """Images/s of `jobs` copies training at once, from the first start to the last end, or
    the first copy's error."""
    threads = max(1, (os.cpu_count() or 1) // jobs)  # as `compare --jobs` shares the cores
    if mode == "threads":
        barrier, results = threading.Barrier(jobs), queue.Queue()
        workers: list[Any] = [
            threading.Thread(target=in_thread, args=(args, i, barrier, results, threads))
            for i in range(jobs)
        ]
    else:
        ctx = multiprocessing.get_context("spawn")  # a forked child cannot use CUDA
        barrier, results = ctx.Barrier(jobs), ctx.Queue()
        workers = [
            ctx.Process(target=train, args=(args, i, barrier, results, threads))
            for i in range(jobs)
        ]
    for w in workers:
        w.start()
    spans = [results.get() for _ in range(jobs)]
    for w in workers:
        w.join()
    errors = [s for s in spans if isinstance(s, str)]
    if errors:  # the first error caused the others (an aborted barrier)
        return next((e for e in errors if "BrokenBarrier" not in e), errors[0])
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    return jobs * args.steps * BATCH / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--attention", default="ecab")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    args = parser.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda needs CUDA")
    where = torch.cuda.get_device_name() if cuda else f"cpu, {os.cpu_count()} cores"
    print(
        f"{args.model}+{args.attention}, fp32, {'CUDA graphs, ' if cuda else ''}batch {BATCH}, "
        f"{args.steps} steps each, {where}"
    )
    print(f"{'':<34}{'images/s (all)':>15}{'vs one alone':>14}", flush=True)
    # Each figure as it is measured; a mode that fails is named and left out of `best`.
    modes = {
        "alone": ("one alone", 1, "threads"),
        "processes": (f"{args.jobs} processes", args.jobs, "processes"),
    }
    if cuda:  # on a CPU the study's runs at once are processes only
        modes["threads"] = (f"{args.jobs} threads, a stream each", args.jobs, "threads")
    speeds: dict[str, float] = {}
    for name, (label, jobs, mode) in modes.items():
        got = together(args, jobs, mode)
        if isinstance(got, str):
            print(f"{label:<34}{'failed: ' + got}", flush=True)
            continue
        speeds[name] = got
        ratio = f"{got / speeds['alone']:>13.2f}x" if "alone" in speeds else ""
        print(f"{label:<34}{got:>15,.0f}{ratio}", flush=True)
    if {"processes", "threads"} <= set(speeds):
        print(f"streams vs processes: {speeds['threads'] / speeds['processes']:.2f}x")
    # What scripts/gpu_study.sh runs the study as: the most images/s of those that ran.
    if speeds:
        print(f"best: {max(speeds, key=speeds.__getitem__)}")


if __name__ == "__main__":
    main()
