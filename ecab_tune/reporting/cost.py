"""What a model costs: parameters, multiply-adds by forward hooks, and batch-1 latency."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ecab_tune.models.bridge import BlockLinear

COUNTED = (nn.Conv1d, nn.Conv2d, nn.Linear, BlockLinear)


def count_params(model: nn.Module) -> int:
    """Learnable parameters as the architecture defines them.

    A `BlockLinear` stores its block-diagonal weight whole, zeros included, to run as one
    matmul: those zeros are masked to stay zero and are no parameters (on ResNet-20 they are
    28,672 of ECAB's weights). Every parameter count the project reports is this one.
    """
    stored = sum(p.numel() for p in model.parameters())
    blocks = (m for m in model.modules() if isinstance(m, BlockLinear))
    return stored - sum(m.weight.numel() - m.num_weights for m in blocks)


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no autograd for the block, then the caller's mode back (BN stats untouched)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


def _one_input(model: nn.Module, input_shape: tuple[int, ...]) -> Tensor:
    device = next(model.parameters()).device
    return torch.zeros((1, *input_shape), device=device)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of convolutions and linear layers for one input of `input_shape` (no batch).

    Each output element of a conv costs (in_channels / groups) · kernel volume MACs, of a linear
    layer in_features; a `BlockLinear` costs its block weights per row, not its stored zeros.
    Biases, norms, activations and gating are element-wise and not counted.
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        if isinstance(module, BlockLinear):  # a row of outputs costs the block weights once
            total += output.numel() // output.shape[-1] * module.num_weights
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        else:
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            total += output.numel() * per_output

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, COUNTED)]
    try:
        with _evaluating(model):
            model(_one_input(model, input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return total


def latency_ms(model: nn.Module, input_shape: tuple[int, ...], repeats: int = 20) -> float:
    """Median wall time of a batch-1 forward in eval mode, after one warm-up forward."""
    x = _one_input(model, input_shape)

    def sync() -> None:
        if x.device.type == "cuda":  # kernels run asynchronously: wait before reading the clock
            torch.cuda.synchronize(x.device)

    times = []
    with _evaluating(model):
        model(x)  # the first call pays for allocation and kernel selection
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0
