from types import SimpleNamespace

from ecab_tune.search.progress import SearchProgress, duration, epochs_left


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


def test_epochs_left_expects_trials_to_last_as_long_as_the_ended_ones():
    # Before any trial ended: the full budget for each pending trial, the rest for running ones.
    assert epochs_left({"a": 2}, pending=2, ended=[], max_epochs=6) == 4 + 12
    # ASHA stopped two after 1 epoch and one ran 6: pending ones are expected to take 8/3.
    assert epochs_left({"a": 1}, pending=3, ended=[1, 1, 6], max_epochs=6) == (
        8 / 3 - 1 + 3 * 8 / 3
    )
    # A running trial past the expectation still has at least one epoch to go.
    assert epochs_left({"a": 4}, pending=0, ended=[1, 1], max_epochs=6) == 1


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
