import itertools
import math
import os
import pickle

import pytest
import torch
from synthetic import make_splits
from torch import nn

from ecab_tune import checkpoint
from ecab_tune.config import TrainConfig
from ecab_tune.device import resolve_device
from ecab_tune.engine import (
    COMPLETED,
    DIVERGED,
    STOPPED,
    Trainer,
    lr_factor,
    make_trainer,
    run_metrics,
    save_trainer,
)
from ecab_tune.models import ModelConfig

CPU = torch.device("cpu")
TINY = ModelConfig(
    "resnet8",
    "ecab",
    {"layers": "last2", "fusion": "concat"},
    width=0.25,
    num_classes=4,
    in_chans=1,
)


def tiny_trainer(epochs: int = 2, **kw) -> Trainer:
    cfg = TrainConfig(epochs=epochs, batch_size=32, lr=0.05, warmup_epochs=0.5, **kw)
    return make_trainer(TINY, make_splits(), cfg, CPU)


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_lr_schedule_warms_up_then_decays_to_zero(schedule):
    factors = [lr_factor(s, 100, 10, schedule) for s in range(100)]
    assert factors[0] == pytest.approx(0.1)
    assert max(factors) == pytest.approx(1.0) and factors.index(1.0) == 9
    assert all(a >= b for a, b in itertools.pairwise(factors[9:]))
    assert factors[-1] < 0.02


@pytest.mark.parametrize(
    "field,value",
    [
        ("epochs", 0),
        ("lr", -1.0),
        ("batch_size", 1),
        ("momentum", 1.0),
        ("schedule", "step"),
        ("warmup_epochs", 50.0),
        ("label_smoothing", 1.0),
    ],
)
def test_train_config_rejects_bad_values_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_cuda_request_without_cuda_is_an_error_not_a_fallback():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is unusable"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_training_learns_the_synthetic_task():
    trainer = tiny_trainer(epochs=4)
    fit = trainer.fit()
    assert fit.status == COMPLETED and len(fit.history) == 4
    assert fit.history[-1].train_loss < fit.history[0].train_loss
    assert fit.history[-1].val_acc > 0.6  # chance is 0.25
    assert all(e.images_per_s > 0 for e in fit.history)


def test_callback_can_stop_early():
    fit = tiny_trainer(epochs=3).fit(lambda result: result.epoch == 1)
    assert fit.status == STOPPED and len(fit.history) == 1


def test_resume_is_bit_for_bit(tmp_path):
    straight = tiny_trainer(epochs=2)
    straight.fit()
    first = tiny_trainer(epochs=2)
    first.fit(lambda result: True)  # stop after epoch 1, as a killed run would
    save_trainer(tmp_path, first, TINY)
    resumed = make_trainer(TINY, make_splits(), first.cfg, CPU, resume_from=tmp_path)
    assert resumed.epoch == 1
    resumed.fit()
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert [e.train_loss for e in resumed.history] == [e.train_loss for e in straight.history]


class NanNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16 * 16, 4)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")


def test_divergence_ends_with_a_status_not_an_exception():
    trainer = Trainer(NanNet(), make_splits(), TrainConfig(epochs=3, batch_size=32), CPU)
    fit = trainer.fit()
    assert fit.status == DIVERGED and len(fit.history) == 1
    assert math.isnan(fit.history[0].train_loss)


def test_batch_larger_than_training_set_is_a_clear_error():
    with pytest.raises(ValueError, match="exceeds the 256 training images"):
        Trainer(NanNet(), make_splits(), TrainConfig(batch_size=512), CPU)


def test_checkpoint_round_trip_reproduces_the_model(tmp_path):
    trainer = tiny_trainer(epochs=1)
    fit = trainer.fit()
    metrics = run_metrics(trainer, fit)
    save_trainer(tmp_path, trainer, TINY, metrics)
    model, meta = checkpoint.load_model(tmp_path)
    assert meta.model == TINY and meta.data == trainer.splits.info
    assert meta.metrics["test_acc"] == metrics["test_acc"]
    x = torch.randn(3, 1, 16, 16)
    trainer.model.eval()
    assert torch.equal(model(x), trainer.model(x))


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match=r"meta\.json is missing"):
        checkpoint.load_model(tmp_path)
    trainer = tiny_trainer(epochs=1)
    save_trainer(tmp_path, trainer, TINY)
    (tmp_path / checkpoint.WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(checkpoint.CheckpointError, match="not a valid safetensors"):
        checkpoint.load_model(tmp_path)
    other = tmp_path / "other"
    save_trainer(other, trainer, TINY)
    meta = (other / checkpoint.META).read_text().replace('"resnet8"', '"resnet20"')
    (other / checkpoint.META).write_text(meta)
    with pytest.raises(checkpoint.CheckpointError, match="does not match"):
        checkpoint.load_model(other)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_in_resume_state_does_not_run(tmp_path):
    trainer = tiny_trainer(epochs=1)
    save_trainer(tmp_path, trainer, TINY)
    marker = tmp_path / "pwned"
    (tmp_path / checkpoint.STATE).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(checkpoint.CheckpointError, match="cannot be loaded safely"):
        checkpoint.load_train_state(tmp_path)
    assert not marker.exists()


@pytest.mark.slow
def test_compiled_training_matches_eager():
    eager, compiled = tiny_trainer(epochs=1), tiny_trainer(epochs=1, compile=True)
    assert compiled.forward is not compiled.model
    batch = next(iter(make_splits().train.images.split(32)))
    images = (batch.float() / 255 - 0.3) / 0.3
    labels = torch.arange(32) % 4
    for _ in range(2):
        loss_e, _ = eager.train_step(images, labels)
        loss_c, _ = compiled.train_step(images, labels)
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-4)
    for a, b in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        compiled.evaluate(compiled.splits.test),
        eager.evaluate(eager.splits.test),
        rtol=1e-4,
        atol=1e-4,
    )


def test_checkpoints_saved_with_the_old_amp_switch_still_load(tmp_path):
    import json

    trainer = tiny_trainer(epochs=1)
    save_trainer(tmp_path, trainer, TINY)
    meta = json.loads((tmp_path / "meta.json").read_text())
    for amp, precision in ((True, "auto"), (False, "fp32")):
        legacy = {k: v for k, v in meta["train"].items() if k != "precision"} | {"amp": amp}
        (tmp_path / "meta.json").write_text(json.dumps({**meta, "train": legacy}))
        assert checkpoint.read_meta(tmp_path).train.precision == precision
        checkpoint.load_model(tmp_path)
