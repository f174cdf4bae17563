"""The one checkpoint format (`ecab_tune.checkpoint`): round trip, clear errors, no unpickling,
old recipes, and what a save killed half-way leaves behind."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file
from synthetic import TINY as ECAB
from synthetic import make_splits, tiny_trainer

from ecab_tune import checkpoint
from ecab_tune.config import TrainConfig
from ecab_tune.engine import make_trainer, run_metrics, save_trainer
from ecab_tune.models import ModelConfig

TINY = ModelConfig("resnet8", "se", width=0.25, num_classes=4, in_chans=1)


def test_a_save_killed_after_the_weights_leaves_no_checkpoint(tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=2, batch_size=32, warmup_epochs=0.5)
    trainer = make_trainer(TINY, make_splits(), cfg, torch.device("cpu"))
    trainer.fit(lambda result: True)  # one epoch
    save_trainer(tmp_path, trainer, TINY)
    assert checkpoint.read_meta(tmp_path).train == cfg

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", killed)  # dies between weights and state
    with pytest.raises(KeyboardInterrupt):
        save_trainer(tmp_path, trainer, TINY)
    # New weights beside the old resume state must not pass for a checkpoint.
    with pytest.raises(checkpoint.CheckpointError, match="is not a checkpoint"):
        checkpoint.read_meta(tmp_path)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_round_trip_reproduces_the_model(tmp_path):
    trainer = tiny_trainer(epochs=1)
    fit = trainer.fit()
    metrics = run_metrics(trainer, fit)
    save_trainer(tmp_path, trainer, ECAB, metrics)
    model, meta = checkpoint.load_model(tmp_path)
    assert meta.model == ECAB and meta.data == trainer.splits.info
    assert meta.metrics["test_acc"] == metrics["test_acc"]
    x = torch.randn(3, 1, 16, 16)
    trainer.model.eval()
    assert torch.equal(model(x), trainer.model(x))


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match=r"meta\.json is missing"):
        checkpoint.load_model(tmp_path)
    trainer = tiny_trainer(epochs=1)
    save_trainer(tmp_path, trainer, ECAB)
    weights = load_file(tmp_path / checkpoint.WEIGHTS)
    name = next(k for k, t in weights.items() if t.is_floating_point())
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, tmp_path / checkpoint.WEIGHTS)
    with pytest.raises(checkpoint.CheckpointError, match="holds NaN or infinite values"):
        checkpoint.load_model(tmp_path)
    (tmp_path / checkpoint.WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(checkpoint.CheckpointError, match="not a valid safetensors"):
        checkpoint.load_model(tmp_path)
    other = tmp_path / "other"
    save_trainer(other, trainer, ECAB)
    meta = (other / checkpoint.META).read_text().replace('"resnet8"', '"resnet20"')
    (other / checkpoint.META).write_text(meta)
    with pytest.raises(checkpoint.CheckpointError, match="does not match"):
        checkpoint.load_model(other)


@pytest.mark.parametrize(
    "edit,words",
    [
        (lambda meta: [1, 2], "expected a JSON object, got list"),
        (lambda meta: "x", "expected a JSON object, got str"),
        (lambda meta: meta["data"].update(classes=["a", "b"]), "names 2 classes"),
        (lambda meta: meta["model"].update(in_chans=3), "data.channels is 1, model.in_chans 3"),
        (lambda meta: meta["model"]["attention_kwargs"].update(fusion="bogus"), "fusion"),
        (lambda meta: meta["model"]["attention_kwargs"].update(layers=[-1, -50]), "layers"),
        (lambda meta: meta["model"].update(width=0), "width"),
        (lambda meta: meta["model"].update(attention_kwargs=["fusion"]), "mapping"),
    ],
)
def test_metadata_that_contradicts_itself_is_a_checkpoint_error(tmp_path, edit, words):
    save_trainer(tmp_path, tiny_trainer(epochs=1), ECAB)
    meta = json.loads((tmp_path / checkpoint.META).read_text())
    meta = edit(meta) or meta  # in place, or a replacement
    (tmp_path / checkpoint.META).write_text(json.dumps(meta))
    with pytest.raises(checkpoint.CheckpointError, match=words):
        checkpoint.load_model(tmp_path)


def test_crafted_pickle_in_resume_state_does_not_run(tmp_path):
    trainer = tiny_trainer(epochs=1)
    save_trainer(tmp_path, trainer, ECAB)
    marker = tmp_path / "pwned"
    (tmp_path / checkpoint.STATE).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(checkpoint.CheckpointError, match="cannot be loaded safely"):
        checkpoint.load_train_state(tmp_path)
    assert not marker.exists()


def test_checkpoints_saved_with_the_old_amp_switch_still_load(tmp_path):
    trainer = tiny_trainer(epochs=1)
    save_trainer(tmp_path, trainer, ECAB)
    meta = json.loads((tmp_path / "meta.json").read_text())
    for amp, precision in ((True, "auto"), (False, "fp32")):
        legacy = {k: v for k, v in meta["train"].items() if k != "precision"} | {"amp": amp}
        (tmp_path / "meta.json").write_text(json.dumps({**meta, "train": legacy}))
        assert checkpoint.read_meta(tmp_path).train.precision == precision
        checkpoint.load_model(tmp_path)
