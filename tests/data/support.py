"""Records and images the data tests share."""

from __future__ import annotations

import numpy as np
import torch

from ecab_tune.data import DataInfo

GREY = DataInfo("grey", ("a", "b"), 1, 6, 5, (0.5,), (0.25,), crop_padding=1, flip=True)
RGB = DataInfo("rgb", ("a", "b"), 3, 5, 7, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), 2, True)


def numpy_rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def solid(colour: tuple[int, ...], height: int, width: int) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.uint8).view(-1, 1, 1).expand(-1, height, width)
