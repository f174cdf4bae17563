"""Where the model looks: Grad-CAM of the top-1 class on the last stage's output.

Grad-CAM (Selvaraju et al.), not a gate-weighted CAM: the gates say which channels a block
keeps, but what decides the class is the head, and Grad-CAM reads it through its gradient, so
the map is faithful for every head: with the plain GAP → linear head it equals the original
CAM exactly, and ECAB's head (a nonlinear MLP over every layer's descriptor) is handled too.
The last block's gate is already inside the gradient and the activations it rescaled.
Its cost is one backward pass to the last stage (measured in benchmarks/serving.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-12  # an all-zero map (every weighted channel negative) stays zero, not NaN


def last_block(model: nn.Module) -> nn.Module:
    """The module whose output the map is drawn on: the last stage's last block, whose output
    the global pool reads (the network calls its blocks one by one, never the stage itself)."""
    return model.get_submodule(model.stage_names[-1])[-1]


def grad_cam(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """(logits N×K, maps N×h×w in [0, 1]) for the top-1 class of each image of `x`.

    Call outside `torch.inference_mode` (its tensors cannot enter autograd). Per-image maps are
    independent: the model is in eval mode, so no layer mixes the images of a batch.
    """
    store: list[Tensor] = []
    hook = last_block(model).register_forward_hook(lambda m, i, out: store.append(out))
    try:
        with torch.enable_grad():
            logits = model(x)
            features = store[0]
            top = logits.argmax(1, keepdim=True)
            (grad,) = torch.autograd.grad(logits.gather(1, top).sum(), features)
    finally:
        hook.remove()
    # Each channel weighted by its mean gradient; only evidence *for* the class is kept (ReLU).
    cam = F.relu((grad.mean((2, 3), keepdim=True) * features).sum(1)).detach()
    cam = cam / cam.amax((1, 2), keepdim=True).clamp_min(EPS)
    return logits.detach(), cam.float()
