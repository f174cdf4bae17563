import json

import pytest

from ecab_tune import experiment
from ecab_tune.search import SearchConfig
from ecab_tune.search.config import resume_command
from ecab_tune.search.results import TrialRow
from ecab_tune.search.runner import prepare
from ecab_tune.search.snapshot import needed_checkpoints, restore_snapshot, save_snapshot


def row(trial_id, best, status):
    return TrialRow(trial_id, best, epochs=2, time_s=1.0, status=status, params={})


ROWS = [
    row("fin_lo", 0.80, experiment.FINISHED),
    row("fin_hi", 0.90, experiment.FINISHED),
    row("stop", 0.95, experiment.STOPPED),  # best by the metric though stopped early
    row("int", 0.70, experiment.INTERRUPTED),
    row("pend", float("nan"), experiment.PENDING),
]


def test_kept_checkpoints_are_the_unended_trials_and_the_best_ended_one():
    assert needed_checkpoints(ROWS, "max", several_objectives=False) == {"int", "pend", "stop"}
    assert needed_checkpoints(ROWS, "min", several_objectives=False) == {"int", "pend", "fin_lo"}
    # Several objectives: the Pareto set is drawn from every finished trial, and best/ is
    # still the first objective's best, here a stopped trial (a resume from the snapshot failed
    # to export it).
    assert needed_checkpoints(ROWS, "max", several_objectives=True) == {
        "int", "pend", "fin_lo", "fin_hi", "stop"
    }  # fmt: skip


def make_experiment(root):
    exp = root / "exp"
    for trial in ("a", "b"):
        for ckpt in ("checkpoint_000000", "checkpoint_000001"):
            (exp / f"trial_{trial}" / ckpt).mkdir(parents=True)
            (exp / f"trial_{trial}" / ckpt / "model.pt").write_bytes(b"x" * 100)
        (exp / f"trial_{trial}" / "result.json").write_text('{"training_iteration": 2}\n')
    (exp / "best").mkdir()
    (exp / "best" / "model.pt").write_bytes(b"x")
    (exp / "tuner.pkl").write_bytes(b"state")
    (exp / "optuna.db").write_bytes(b"db")
    return exp


def test_a_snapshot_drops_unneeded_checkpoints_and_exports_and_restores_elsewhere(tmp_path):
    exp, snap = make_experiment(tmp_path), tmp_path / "snap"
    (snap / "stale").mkdir(parents=True)  # an older snapshot is replaced whole
    files, size = save_snapshot(exp, snap, keep={"b"})
    kept = sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file())
    assert kept == [
        "optuna.db",
        "trial_a/result.json",
        "trial_b/checkpoint_000000/model.pt",
        "trial_b/checkpoint_000001/model.pt",
        "trial_b/result.json",
        "tuner.pkl",
    ]
    assert files == 6 and size == sum((snap / k).stat().st_size for k in kept)
    assert not (tmp_path / "snap.partial").exists()

    restore_snapshot(snap, tmp_path / "other" / "exp")
    assert (tmp_path / "other" / "exp" / "trial_b" / "checkpoint_000001" / "model.pt").is_file()
    with pytest.raises(ValueError, match="is not a search snapshot"):
        restore_snapshot(tmp_path / "other", tmp_path / "again")


def test_resume_restores_a_missing_experiment_from_the_snapshot_only(tmp_path, capsys):
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "tuner.pkl").write_bytes(b"")
    (snap / "search.json").write_text(json.dumps({"space": "quick", "max_epochs": 2}))
    runs = tmp_path / "runs"
    cfg, _ = prepare(SearchConfig(name="q", storage=str(runs), resume=True, snapshot=str(snap)))
    assert (runs / "q" / "tuner.pkl").is_file() and cfg.max_epochs == 2
    assert f"restored {runs / 'q'} from the snapshot {snap}" in capsys.readouterr().out
    # The experiment now exists: a second resume uses it, not the snapshot.
    (snap / "search.json").write_text(json.dumps({"space": "quick", "max_epochs": 5}))
    assert (
        prepare(SearchConfig(name="q", storage=str(runs), resume=True, snapshot=str(snap)))[
            0
        ].max_epochs
        == 2
    )


@pytest.mark.parametrize(
    "setup,words",
    [
        ("nothing", "no experiment to continue at"),
        ("bare folder", "exists but holds no experiment to continue"),
        ("not a snapshot", "is not a search snapshot"),
    ],
)
def test_a_resume_that_cannot_restore_says_why_and_touches_nothing(tmp_path, setup, words):
    runs, snap = tmp_path / "runs", tmp_path / "snap"
    snap.mkdir()
    if setup != "not a snapshot":
        (snap / "tuner.pkl").write_bytes(b"")
    if setup == "bare folder":
        (runs / "q").mkdir(parents=True)
        (runs / "q" / "notes.txt").write_text("mine")
    given = None if setup == "nothing" else str(snap)
    with pytest.raises(ValueError, match=words):
        prepare(SearchConfig(name="q", storage=str(runs), resume=True, snapshot=given))
    if setup == "bare folder":
        assert [p.name for p in (runs / "q").iterdir()] == ["notes.txt"]
    else:
        assert not (runs / "q").exists()


def test_the_resume_command_carries_the_snapshot():
    assert resume_command(SearchConfig(name="q", snapshot="state/q")) == (
        "python -m ecab_tune.search --name q --snapshot state/q --resume"
    )


@pytest.mark.parametrize("where", ["a folder of other files", "inside the experiment", "a file"])
def test_a_snapshot_destination_that_is_no_snapshot_is_refused_before_the_search(tmp_path, where):
    runs = tmp_path / "runs"
    dest = {"inside the experiment": runs / "q" / "snap"}.get(where, tmp_path / "mine")
    if where == "a folder of other files":
        dest.mkdir()
        (dest / "thesis.txt").write_text("mine")
    elif where == "a file":
        dest.write_text("mine")
    with pytest.raises(ValueError, match=r"no search snapshot|outside the experiment|is a file"):
        prepare(SearchConfig(space="quick", name="q", storage=str(runs), snapshot=str(dest)))
    assert not (runs / "q").exists()
    if where == "a folder of other files":
        assert (dest / "thesis.txt").read_text() == "mine"
    if where == "a file":
        assert dest.read_text() == "mine"


def test_a_snapshot_destination_may_be_empty_or_an_earlier_snapshot(tmp_path):
    runs, empty, earlier = tmp_path / "runs", tmp_path / "empty", tmp_path / "earlier"
    empty.mkdir()
    earlier.mkdir()
    (earlier / "tuner.pkl").write_bytes(b"")
    for dest, name in ((empty, "a"), (earlier, "b")):
        cfg, _ = prepare(
            SearchConfig(space="quick", name=name, storage=str(runs), snapshot=str(dest))
        )
        assert cfg.snapshot == str(dest)
