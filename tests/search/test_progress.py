import math
from types import SimpleNamespace

from ecab_tune.reporting.document import duration
from ecab_tune.search.progress import (
    SearchProgress,
    decision_points,
    epochs_left,
    expected_epochs,
)


def trial(trial_id, state, epochs, best=None, **config):
    return SimpleNamespace(
        trial_id=trial_id,
        status=state,
        last_result={"training_iteration": epochs} if epochs else {},
        metric_analysis={"val_acc": {"max": best}} if best is not None else {},
        config=config,
        path=f"/runs/x/trial_{trial_id}",
    )


def test_durations_read_as_a_person_would_say_them():
    assert [duration(s) for s in (4.6, 65, 3725)] == ["5s", "1m05s", "1h02m"]


def test_decision_points_are_ashas_rungs_as_ray_places_them_then_the_budget():
    assert decision_points(15, grace=2, factor=3) == (2, 6, 15)  # the bridge space's
    assert decision_points(9, grace=1, factor=3) == (1, 3, 9)
    assert decision_points(9, grace=20, factor=3) == (9,)  # grace capped at the budget
    assert decision_points(15) == (15,)  # FIFO: every trial trains the budget


def test_a_trial_is_expected_to_pass_each_rung_with_a_chance_of_one_in_factor():
    points = (2, 6, 15)
    assert expected_epochs(0, points, 3) == 2 + 4 / 3 + 9 / 9
    assert expected_epochs(2, points, 3) == 6 + 9 / 3  # promoted past the first rung
    assert expected_epochs(7, points, 3) == 15  # past the last rung: to the budget
    assert expected_epochs(0, (15,), 3) == 15


def test_epochs_left_trusts_the_ended_trials_once_a_few_have_ended():
    points = (1, 3, 6)
    # Few ended: pending trials by the rung model, running ones to their expected end.
    assert epochs_left({"a": 4}, pending=2, ended=[1, 6], points=points, factor=3) == (
        (6 - 4) + 2 * (1 + 2 / 3 + 3 / 9)
    )
    # Five ended: their mean for pending ones (async ASHA promotes early trials more often).
    assert epochs_left({}, pending=3, ended=[1, 1, 3, 6, 6], points=points, factor=3) == 3 * 17 / 5
    # A trial that has trained the budget has nothing left.
    assert epochs_left({"a": 6}, pending=0, ended=[], points=points, factor=3) == 0


def test_the_status_line_counts_every_status_and_names_the_best_trial():
    progress = SearchProgress(metric="val_acc", mode="max", max_epochs=3, every_s=30)
    progress.setup(total_num_samples=6)
    progress._epochs_this_run = 6
    trials = [
        trial("a", "TERMINATED", 3, 0.81, lr=0.1),
        trial("b", "TERMINATED", 1, 0.52, lr=0.3),
        trial("c", "RUNNING", 1, 0.60, lr=0.2),
        trial("d", "ERROR", 1, 0.40, lr=0.9),
        trial("e", "PENDING", 0),
    ]
    line = progress.status_line(trials, now=progress._start + 60)
    assert line.startswith("[search] 1m00s  1 running, 1 finished, 1 stopped early, 1 errored, ")
    assert "2 pending" in line  # one created, one not yet
    assert "best val_acc 0.8100 (trial a: lr=0.1)" in line
    assert line.endswith("left") and "~" in line


def test_a_line_per_ended_trial_says_how_it_ended(capsys):
    progress = SearchProgress(metric="val_acc", mode="max", max_epochs=3, every_s=30)
    progress.on_trial_complete(0, [], trial("b", "RUNNING", 1, 0.52, lr=0.3))
    progress.on_trial_complete(0, [], trial("a", "RUNNING", 3, 0.81, lr=0.1))
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "[search] trial b stopped early after 1/3 epochs: val_acc 0.5200 (lr=0.3)",
        "[search] trial a finished after 3/3 epochs: val_acc 0.8100 (lr=0.1)",
    ]


def test_a_diverged_trial_keeps_the_best_value_it_reported_before_its_nan(capsys):
    # Ray's own record of a trial's metrics: max(nan, x) and min(nan, x) are nan, so the NaN
    # val_loss a diverging trial reports last wipes out its best there.
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    progress = SearchProgress(metric="val_loss", mode="min", max_epochs=5, every_s=30)
    progress.setup(total_num_samples=1)
    record = _TrainingRunMetadata()
    diverging = trial("a", "RUNNING", 3, lr=9.0)
    for step, loss in enumerate((0.9, 0.7, float("nan")), 1):
        record.update_metric("val_loss", loss, step=step)
        progress.on_trial_result(0, [diverging], diverging, {"val_loss": loss})
    assert math.isnan(record.metric_analysis["val_loss"]["min"])
    diverging.metric_analysis = record.metric_analysis
    diverging.last_result = {"training_iteration": 3, "diverged": True}
    progress.on_trial_complete(0, [diverging], diverging)
    line = capsys.readouterr().out.strip()
    assert line == "[search] trial a diverged after 3/5 epochs: val_loss 0.7000 (lr=9)"
    assert "best val_loss 0.7000 (trial a" in progress.status_line([diverging], progress._start)
