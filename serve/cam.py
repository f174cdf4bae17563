"""Where the model looks: Grad-CAM of the top-1 class on the last stage's output.

Grad-CAM (Selvaraju et al.), not a gate-weighted CAM: the gates say which channels a block
keeps, but what decides the class is the head, and Grad-CAM reads it through its gradient, so
the map is faithful for every head: with the plain GAP → linear head it equals the original
CAM exactly, and ECAB's head (a nonlinear MLP over every layer's descriptor) is handled too.
The last block's gate is already inside the gradient and the activations it rescaled.
Its cost is one backward pass to the last stage (measured in benchmarks/serving.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-12  # an all-zero map (every weighted channel negative) stays zero, not NaN


def last_block(model: nn.Module) -> nn.Module:
    """The module whose output the map is drawn on: the last stage's last block, whose output
    the global pool reads (the network calls its blocks one by one, never the stage itself)."""
    return model.get_submodule(model.stage_names[-1])[-1]


@contextlib.contextmanager
def grad_cam(model: nn.Module) -> Iterator[Callable[[Tensor], Tensor]]:
    """Inside, forwards of `model` run with autograd and keep the last block's output; the
    yielded function turns the logits of that forward into maps N×h×w in [0, 1] of each image's
    top-1 class.

    Open it outside `torch.inference_mode` (its tensors cannot enter autograd). Per-image maps
    are independent: the model is in eval mode, so no layer mixes the images of a batch.
    """
    store: list[Tensor] = []
    hook = last_block(model).register_forward_hook(lambda m, i, out: store.append(out))

    def maps(logits: Tensor) -> Tensor:
        features = store[-1]
        top = logits.argmax(1, keepdim=True)
        (grad,) = torch.autograd.grad(logits.gather(1, top).sum(), features)
        # Each channel weighted by its mean gradient; only evidence *for* the class is kept.
        cam = F.relu((grad.mean((2, 3), keepdim=True) * features).sum(1)).detach()
        cam = cam / cam.amax((1, 2), keepdim=True).clamp_min(EPS)
        return cam.float()

    try:
        with torch.enable_grad():
            yield maps
    finally:
        hook.remove()
