"""Datasets as uint8 tensors, batched augmentation on the device, and the one preprocessing.

Flow: `load_dataset` (readers in `sources` / `imagefolder`; `load_data` from a run's
`DataConfig`) → `Splits` → `iterate_batches` (crop, flip, `preprocess`). The service uses
`image_to_uint8` and `preprocess` from here too.
"""

from ecab_tune.data.images import image_to_uint8
from ecab_tune.data.info import DataInfo, DatasetNotFoundError, Split, Splits
from ecab_tune.data.loading import DATASETS, load_data, load_dataset
from ecab_tune.data.pipeline import batch_crop, batch_flip, iterate_batches, preprocess
from ecab_tune.data.sampling import stratified_split

__all__ = [
    "DATASETS",
    "DataInfo",
    "DatasetNotFoundError",
    "Split",
    "Splits",
    "batch_crop",
    "batch_flip",
    "image_to_uint8",
    "iterate_batches",
    "load_data",
    "load_dataset",
    "preprocess",
    "stratified_split",
]
