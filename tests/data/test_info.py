"""What a dataset is and the tensors that hold it (`ecab_tune.data.info`)."""

from __future__ import annotations

import json

import pytest
import torch

from ecab_tune.data import DataInfo, Split

from .support import RGB


def test_data_info_json_round_trip() -> None:
    restored = DataInfo.from_dict(json.loads(json.dumps(RGB.to_dict())))
    assert restored == RGB and isinstance(restored.classes, tuple)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"channels": None}, ValueError),
        ({"channels": 2}, ValueError),
        ({"classes": "ab"}, TypeError),
        ({"mean": [0.5]}, ValueError),
        ({"std": [0.1, 0.0, 0.1]}, ValueError),
        ({"flip": "yes"}, ValueError),
        ({"colour": True}, ValueError),
    ],
)
def test_data_info_rejects_bad_dicts(change: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        DataInfo.from_dict({**RGB.to_dict(), **change})
    with pytest.raises(KeyError):
        DataInfo.from_dict({k: v for k, v in RGB.to_dict().items() if k != "std"})


def test_split_checks_dtypes() -> None:
    with pytest.raises(ValueError, match="labels must be int64"):
        Split(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="images must be uint8"):
        Split(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64))
