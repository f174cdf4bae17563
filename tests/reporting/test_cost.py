"""What a model costs (`ecab_tune.reporting.cost`)."""

import torch
from torch import nn

from ecab_tune.reporting.cost import count_macs


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
