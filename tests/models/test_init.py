"""Seeded initialisation (`models.init`): variants paired by seed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from ecab_tune.models import create_model, init_hash


def test_one_seed_gives_every_variant_the_same_trunk():
    variants = ["none", "se", "cbam", "eca", "bridge", "bav2", "ecab", "ecab_head"]
    hashes = {v: init_hash(create_model("resnet20", v, seed=3)) for v in variants}
    assert len(set(hashes.values())) == 1, hashes
    assert init_hash(create_model("resnet20", "none", seed=4)) != hashes["none"]
    none, se = create_model("resnet20", "none", seed=3), create_model("resnet20", "se", seed=3)
    for key, value in none.state_dict().items():  # the classifier too, not only the trunk
        torch.testing.assert_close(se.state_dict()[key], value, rtol=0, atol=0)
    # Gates come from their own generator: same seed, same gate; another seed, another gate.
    again = create_model("resnet20", "se", seed=3)
    gate = "stage2.block1.attn.fc1.weight"
    assert torch.equal(again.state_dict()[gate], se.state_dict()[gate])
    assert not torch.equal(
        create_model("resnet20", "se", seed=4).state_dict()[gate], again.state_dict()[gate]
    )


def test_models_built_in_threads_at_once_are_initialised_as_alone():
    # Runs in threads of one process (`compare --streams`) build their models at once, and the
    # global RNG is one per process: unguarded, their seeded draws interleave.
    seeds = range(6)
    alone = {s: init_hash(create_model("resnet8", "ecab", seed=s)) for s in seeds}
    for _ in range(3):
        with ThreadPoolExecutor(len(seeds)) as pool:
            built = pool.map(lambda s: create_model("resnet8", "ecab", seed=s), seeds)
            assert dict(zip(seeds, map(init_hash, built), strict=True)) == alone
