"""The served model: answers equal direct inference; checkpoints never unpickle; an
experiment folder serves its best."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from serve_support import (
    AUTH,
    FASHION,
    FASHION_DIR,
    RGB32,
    assert_error,
    assert_matches,
    assert_still_serving,
    direct,
    encode,
    fashion_test_images,
    make_client,
    post_files,
)

from ecab_tune import checkpoint
from ecab_tune.checkpoint import CheckpointError
from serve.model import resolve_checkpoint


@pytest.mark.parametrize("name", ["bridge_rgb", "cbam_rgb"])
def test_prediction_equals_direct_inference_on_sample_photos(ckpts, name) -> None:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # china.jpg and flower.jpg, 427×640 RGB
    blobs = [encode(photo) for photo in photos]
    with make_client(ckpts[name]) as c:
        r = post_files(c, blobs, "?top_k=10", headers={})
    assert r.status_code == 200, r.text
    for photo, pred in zip(photos, r.json()["predictions"], strict=True):
        probs, maps = direct(ckpts[name], Image.fromarray(photo))
        assert maps, "the model has attention modules"
        assert_matches(pred, probs, maps, RGB32.classes)


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason=f"{FASHION_DIR} is absent")
@pytest.mark.parametrize("name", ["cbam", "ecab"])
def test_prediction_equals_direct_inference_on_fashion_mnist(ckpts, name) -> None:
    samples = fashion_test_images(8)
    with make_client(ckpts[name]) as c:
        r = post_files(c, [encode(image) for image, _ in samples], "?top_k=10", headers={})
    assert r.status_code == 200, r.text
    for (image, _), pred in zip(samples, r.json()["predictions"], strict=True):
        probs, maps = direct(ckpts[name], Image.fromarray(image))
        assert_matches(pred, probs, maps, FASHION.classes)


def _evil(marker: Path):
    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return Evil()


def test_crafted_pickles_never_run(
    client: TestClient, ckpts, tmp_path: Path, under_root: Path
) -> None:
    marker = tmp_path / "pwned"
    # The payload is live: unpickling it creates the marker file.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_evil(probe))).close()
    assert probe.exists()

    as_weights = under_root / "pickle_as_weights"
    shutil.copytree(ckpts["cbam"], as_weights)
    (as_weights / checkpoint.WEIGHTS).write_bytes(pickle.dumps({"w": _evil(marker)}))
    r = client.post("/reload", json={"path": str(as_weights)}, headers=AUTH)
    assert_error(r, 422, "safetensors", "still serving")

    torch_zip = under_root / "torch_save_as_weights"
    shutil.copytree(ckpts["cbam"], torch_zip)
    torch.save({"w": _evil(marker)}, torch_zip / checkpoint.WEIGHTS)
    assert_error(client.post("/reload", json={"path": str(torch_zip)}, headers=AUTH), 422)

    # A malicious resume state: the service never reads it; the loader refuses it.
    with_state = under_root / "evil_train_state"
    shutil.copytree(ckpts["ecab"], with_state)
    torch.save({"optimizer": _evil(marker)}, with_state / checkpoint.STATE)
    r = client.post("/reload", json={"path": str(with_state)}, headers=AUTH)
    assert r.status_code == 200, r.text
    with pytest.raises(CheckpointError):
        checkpoint.load_train_state(with_state)

    assert not marker.exists(), "code inside a pickle ran"
    assert_still_serving(client)


def test_experiment_folder_serves_its_best(ckpts, tmp_path: Path) -> None:
    experiment = tmp_path / "runs" / "exp"
    shutil.copytree(ckpts["ecab"], experiment / "best")
    assert resolve_checkpoint(experiment) == experiment / "best"
    assert resolve_checkpoint(ckpts["cbam"]) == ckpts["cbam"]
    with make_client(experiment) as c:
        info = c.get("/model").json()
        assert info["name"] == "exp/best"  # relative to runs/, the folder of experiments
        assert info["attention"] == "ecab"
