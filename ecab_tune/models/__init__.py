"""The model zoo: CIFAR ResNets × attention gates, built by name.

create_model("resnet20", "ecab", fusion="concat", layers="last2", num_classes=10)
"""

from ecab_tune.models import resnet as _resnet  # noqa: F401  (registers the architectures)
from ecab_tune.models.attention import AttentionModule, capture_attention
from ecab_tune.models.init import init_hash, init_weights
from ecab_tune.models.registry import (
    ModelConfig,
    attention_options,
    create_attn,
    create_model,
    list_attentions,
    list_models,
    model_params,
    register_model,
    resolved_options,
)

__all__ = [
    "AttentionModule",
    "ModelConfig",
    "attention_options",
    "capture_attention",
    "create_attn",
    "create_model",
    "init_hash",
    "init_weights",
    "list_attentions",
    "list_models",
    "model_params",
    "register_model",
    "resolved_options",
]
