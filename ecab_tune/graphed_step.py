"""A whole training step (forward, loss, backward, SGD update) captured once as a CUDA graph.

A ResNet-20 step on a 28x28 batch is hundreds of small kernels; eagerly, each is a launch the
CPU must issue (in a sandboxed VM, a trip through the kernel driver too), and the GPU mostly
waits: on an H200 plain ResNet-20 trained at 18.8k img/s and ECAB at 5.9k, one process alone,
while the arithmetic would allow many times that. A replay issues the whole step at once. The
recipe is PyTorch's "whole-network capture" (torch.cuda.graphs): warm up on a side stream,
capture, replay with new data copied into the captured input tensors.

What a capture needs, and how this module gives it:
- fixed shapes: training batches are always full (`iterate_batches` drops the last partial one);
- no host synchronisation inside the step: the learning rate is a device tensor that the
  caller fills before each replay, and SGD runs fused (its foreach path reads a tensor LR with
  `.item()`);
- the warm-up steps must leave no trace: weights, BatchNorm statistics and momentum are put
  back afterwards, so the first replayed step is the step an eager trainer would take.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import torch
from torch import Tensor, nn

WARMUP_STEPS = 3  # cuDNN picks its algorithms and the allocator settles before the capture
# Runs in threads of one process (`compare --streams`) warm up and capture one at a time: a
# capture forbids unsafe CUDA calls in its own thread only, so the other runs keep replaying
# meanwhile, but another's warm-up (cuDNN's algorithm search synchronises the device)
# invalidated it on an H100.
_CAPTURE = threading.Lock()


class GraphedStep:
    """Replays one captured training step on new batches of the captured shape."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.SGD,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        images: Tensor,
        labels: Tensor,
        lr: float,
        autocast: Callable[[], contextlib.AbstractContextManager],
    ):
        if any(not group.get("fused") for group in optimizer.param_groups):
            raise ValueError("a graphed step needs a fused SGD (its LR is a device tensor)")
        self.images, self.labels = images.clone(), labels.clone()
        # One LR tensor for every group: the graph reads it, `set_lr` writes it.
        self.lr = torch.tensor(float(lr), device=images.device)
        for group in optimizer.param_groups:
            group["lr"] = self.lr
        saved_model = {k: v.clone() for k, v in model.state_dict().items()}
        saved_momentum = {
            p: s["momentum_buffer"].clone()
            for p, s in optimizer.state.items()
            if s.get("momentum_buffer") is not None
        }

        def step() -> tuple[Tensor, Tensor]:
            with autocast():
                logits = model(self.images)
                loss = loss_fn(logits, self.labels)
            loss.backward()
            optimizer.step()
            return loss.detach() * len(self.labels), (logits.argmax(1) == self.labels).sum()

        self.graph = torch.cuda.CUDAGraph()
        with _CAPTURE:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    optimizer.zero_grad(set_to_none=True)
                    step()
            torch.cuda.current_stream().wait_stream(side)
            optimizer.zero_grad(set_to_none=True)  # the capture allocates the grads it writes
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self.loss_sum, self.correct = step()
        # Undo the warm-up, in place (the graph holds these tensors' addresses). Momentum that
        # did not exist before starts at zero: 0.9 * 0 + g is the eager first step's buffer g.
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(saved_model[k])
            for p, s in optimizer.state.items():
                buffer = s.get("momentum_buffer")
                if buffer is not None:
                    buffer.copy_(saved_momentum[p]) if p in saved_momentum else buffer.zero_()

    def set_lr(self, lr: float) -> None:
        self.lr.fill_(lr)

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(summed loss, correct count) of the step, as device tensors that the next call
        overwrites: consume them (queue work on them) before calling again."""
        self.images.copy_(images)
        self.labels.copy_(labels)
        self.graph.replay()
        return self.loss_sum, self.correct
