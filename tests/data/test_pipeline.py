"""Preprocessing, batched augmentation and batches (`ecab_tune.data.pipeline`)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from ecab_tune.data import DataInfo, Split, batch_crop, batch_flip, iterate_batches, preprocess

from .support import GREY, RGB


def test_preprocess_matches_manual_normalisation() -> None:
    images = torch.randint(0, 256, (4, 3, 5, 7), dtype=torch.uint8)
    mean = torch.tensor(RGB.mean).view(1, 3, 1, 1)
    std = torch.tensor(RGB.std).view(1, 3, 1, 1)
    out = preprocess(images, RGB)
    assert out.dtype == torch.float32 and out.device == images.device
    torch.testing.assert_close(out, (images.float() / 255 - mean) / std)
    with pytest.raises(ValueError, match="channels"):
        preprocess(images[:, :1], RGB)


def test_batch_crop_and_flip_equal_per_image_reference() -> None:
    images = torch.randint(0, 256, (9, 3, 5, 7), dtype=torch.uint8)
    offsets = torch.randint(0, 5, (9, 2))
    offsets[0], offsets[1] = torch.tensor([0, 0]), torch.tensor([4, 4])
    cropped = batch_crop(images, 2, offsets)
    for image, out, (dy, dx) in zip(images, cropped, offsets.tolist(), strict=True):
        assert torch.equal(out, F.pad(image, (2, 2, 2, 2))[:, dy : dy + 5, dx : dx + 7])
    flip = torch.tensor([True, False] * 4 + [True])
    flipped = batch_flip(images, flip)
    for image, out, f in zip(images, flipped, flip.tolist(), strict=True):
        assert torch.equal(out, torch.flip(image, dims=[2]) if f else image)


def _id_split(n: int, info: DataInfo) -> Split:
    """Labels are the image indices, so batches say which images they hold."""
    images = torch.randint(
        0,
        256,
        (n, info.channels, info.height, info.width),
        dtype=torch.uint8,
        generator=torch.Generator().manual_seed(n),
    )
    return Split(images, torch.arange(n))


def _train_epoch(split: Split, seed: int, **kw: object) -> list[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(seed)
    return list(iterate_batches(split, GREY, 8, train=True, generator=generator, **kw))


def test_train_batches_are_seeded_full_and_cover_each_image_once() -> None:
    split = _id_split(37, GREY)
    batches = _train_epoch(split, seed=3)
    assert [len(y) for _, y in batches] == [8, 8, 8, 8]  # the partial batch is dropped
    seen = torch.cat([y for _, y in batches])
    assert len(seen.unique()) == 32
    again = _train_epoch(split, seed=3)
    for (xa, ya), (xb, yb) in zip(batches, again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = _train_epoch(split, seed=4)
    assert not torch.equal(torch.cat([y for _, y in other]), seen)


def test_train_images_are_crops_or_flips_of_their_source() -> None:
    split = _id_split(37, GREY)
    plain = preprocess(split.images, GREY)
    augmented = 0
    for x, y in _train_epoch(split, seed=0):
        for image, index in zip(x, y.tolist(), strict=True):
            padded = F.pad(plain[index], (1, 1, 1, 1), value=-GREY.mean[0] / GREY.std[0])
            candidates = [
                padded[:, dy : dy + 6, dx : dx + 5].flip(2)
                if f
                else padded[:, dy : dy + 6, dx : dx + 5]
                for dy, dx, f in itertools.product(range(3), range(3), (False, True))
            ]
            assert any(torch.allclose(image, c) for c in candidates)
            augmented += not torch.allclose(image, plain[index])
    assert augmented > 16


def test_eval_batches_cover_all_images_in_order_unaugmented() -> None:
    split = _id_split(37, GREY)
    batches = list(iterate_batches(split, GREY, 8, train=False))
    assert [len(y) for _, y in batches] == [8, 8, 8, 8, 5]
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(37))
    assert torch.equal(torch.cat([x for x, _ in batches]), preprocess(split.images, GREY))


def test_channels_last_batches() -> None:
    split = _id_split(16, RGB)
    x, _ = next(iterate_batches(split, RGB, 8, train=False, channels_last=True))
    assert x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_batches_are_identical_on_cpu_and_cuda() -> None:
    split = _id_split(37, GREY)
    cpu, cuda = _train_epoch(split, seed=7), _train_epoch(split.to("cuda"), seed=7)
    for (xa, ya), (xb, yb) in zip(cpu, cuda, strict=True):
        assert xb.device.type == "cuda"
        assert torch.equal(ya, yb.cpu())
        torch.testing.assert_close(xa, xb.cpu())
