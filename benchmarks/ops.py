"""aten ops per training step for every attention variant: a CPU-measurable proxy for GPU
launch overhead (on a GPU a ResNet-20 step is launch-bound: each op is at least one kernel).

    python benchmarks/ops.py --model resnet20 --batch-size 64
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ecab_tune.models import create_model, list_attentions


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.count += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(model_name: str, attention: str, batch_size: int, side: int = 32) -> int:
    """aten ops of one SGD step (forward, backward, foreach update), after a warm-up step."""
    model = create_model(model_name, attention).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
    x, y = torch.randn(batch_size, 3, side, side), torch.randint(0, 10, (batch_size,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()  # momentum buffers exist from here on, as in every later step
    with OpCounter() as counter:
        step()
    return counter.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    counts = {a: ops_per_step(args.model, a, args.batch_size) for a in list_attentions()}
    print(f"aten ops per training step, {args.model}, batch {args.batch_size}, foreach SGD")
    print("| variant | ops | × none | × se |\n|---|---|---|---|")
    for attention, n in counts.items():
        print(f"| {attention} | {n:,} | {n / counts['none']:.2f} | {n / counts['se']:.2f} |")


if __name__ == "__main__":
    main()
