"""What a model costs (`ecab_tune.reporting.cost`)."""

import pytest
import torch
from torch import nn

from ecab_tune.models import create_model
from ecab_tune.models.bridge import BlockLinear
from ecab_tune.reporting.cost import count_macs, count_params


def test_count_macs_matches_the_hand_count_and_leaves_the_model_alone():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # 4×8×8 outputs × (1·3·3) = 2304
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2),  # 8×4×4 × (2·3·3) = 2304
        nn.Flatten(),
        nn.Linear(128, 10),  # 10 × 128 = 1280
    )
    running_mean = model[1].running_mean.clone()
    assert count_macs(model, (1, 8, 8)) == 2304 + 2304 + 1280
    assert model.training and torch.equal(model[1].running_mean, running_mean)


def test_a_block_linear_costs_what_its_separate_linear_layers_would() -> None:
    # One matmul stores the block-diagonal weight whole (4·3 × 56); the three Linear(C_i → 4)
    # it stands for hold 4·56 weights, and each costs as many multiply-adds per input.
    fused = BlockLinear([8, 16, 32], 4)
    separate = nn.ModuleList(nn.Linear(c, 4, bias=False) for c in (8, 16, 32))
    assert fused.weight.numel() == 12 * 56
    assert count_params(fused) == sum(p.numel() for p in separate.parameters()) == 4 * 56
    assert count_macs(fused, (56,)) == 4 * 56
    assert count_macs(fused, (3, 56)) == 3 * 4 * 56  # per row of outputs


@pytest.mark.parametrize("attention", ["bridge", "bav2", "ecab"])
def test_a_bridge_model_counts_its_projection_blocks_not_their_zeros(attention) -> None:
    model = create_model("resnet20", attention, num_classes=10, in_chans=1)
    blocks = [m for m in model.modules() if isinstance(m, BlockLinear)]
    stored = sum(p.numel() for p in model.parameters())
    zeros = sum(m.weight.numel() - sum(w.numel() for w in m.block_weights()) for m in blocks)
    assert blocks and zeros > 0
    assert count_params(model) == stored - zeros
    plain = create_model("resnet20", "none", num_classes=10, in_chans=1)
    assert count_params(plain) == sum(p.numel() for p in plain.parameters())
