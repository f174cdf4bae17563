"""The one way to run a model on images: preprocess → forward → capture the attention weights.

The service, the exporter and the tests' reference answers all call `forward_with_attention`;
the caller picks the grad mode (`inference_mode` to serve, autograd for Grad-CAM or tracing).
"""

from __future__ import annotations

import contextlib

from torch import Tensor, nn

from ecab_tune.data import DataInfo, preprocess
from ecab_tune.models.attention import capture_attention

# {module name: {"channel": N×C, "spatial": N×H×W}}: what each attention module computed.
AttentionWeights = dict[str, dict[str, Tensor]]


def forward_with_attention(
    model: nn.Module, images: Tensor, data: DataInfo, attention: bool = True
) -> tuple[Tensor, AttentionWeights]:
    """uint8 N×C×H×W `images` (on the model's device) → (logits N×K, attention weights).

    Preprocessed exactly as training does (`data`'s mean and std). With `attention=False` the
    weights are not recorded and the dict is empty.
    """
    with capture_attention(model) if attention else contextlib.nullcontext({}) as captured:
        logits = model(preprocess(images, data))
    return logits, captured
