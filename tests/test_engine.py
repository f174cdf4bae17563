"""The one training loop and evaluation (`ecab_tune.engine`): schedule, learning, stopping,
divergence, exact resume."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from synthetic import TINY, make_splits, tiny_trainer
from torch import nn

from ecab_tune.config import TrainConfig
from ecab_tune.engine import (
    COMPLETED,
    DIVERGED,
    STOPPED,
    Trainer,
    lr_factor,
    make_trainer,
    save_trainer,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_lr_schedule_warms_up_then_decays_to_zero(schedule):
    factors = [lr_factor(s, 100, 10, schedule) for s in range(100)]
    assert factors[0] == pytest.approx(0.1)
    assert max(factors) == pytest.approx(1.0) and factors.index(1.0) == 9
    assert all(a >= b for a, b in itertools.pairwise(factors[9:]))
    assert factors[-1] < 0.02


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


def test_compile_is_left_out_on_the_cpu():
    # Inductor's CPU backward gave changing gradients and a corrupted heap here (engine.py).
    trainer = tiny_trainer(epochs=1, compile=True)
    assert not trainer.compiled and trainer.forward is trainer.model


def test_a_resume_state_that_does_not_fit_is_a_checkpoint_error(tmp_path):
    from ecab_tune import checkpoint

    first = tiny_trainer(epochs=2)
    first.fit(lambda result: True)
    save_trainer(tmp_path, first, TINY)
    state = torch.load(tmp_path / checkpoint.STATE, weights_only=True)
    key = next(iter(state))
    torch.save({k: v for k, v in state.items() if k != key}, tmp_path / checkpoint.STATE)
    with pytest.raises(checkpoint.CheckpointError, match="does not fit its weights and recipe"):
        make_trainer(TINY, make_splits(), first.cfg, CPU, resume_from=tmp_path)
