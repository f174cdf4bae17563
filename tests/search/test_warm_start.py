import json

import optuna
import pytest
from search_support import SPACE

from ecab_tune.search import SearchConfig, load_space
from ecab_tune.search.objectives import parse_objectives
from ecab_tune.search.runner import prepare
from ecab_tune.search.warm_start import FROM_ATTR, seed_study

State = optuna.trial.TrialState
# (params, status, val_acc per epoch) of an old search with a 3-epoch budget.
OLD = {
    "done1": ({"attention.fusion": "sum", "lr": 0.01}, "finished", [0.5, 0.6, 0.7]),
    "done2": ({"attention.fusion": "concat", "lr": 0.2}, "finished", [0.6, 0.7, 0.8]),
    "stop1": ({"attention.fusion": "concat", "lr": 0.05}, "stopped", [0.65]),
    "stop2": ({"attention.fusion": "sum", "lr": 0.3}, "stopped", [0.2]),
    "wide": ({"attention.fusion": "sum", "lr": 0.9}, "finished", [0.4, 0.5, 0.55]),  # lr > 0.5
}


def make_old(root, space_text=SPACE, trials=OLD, max_epochs=3):
    """An experiment folder as a search leaves it: its study, trial results and search.json."""
    old = root / "old"
    old.mkdir()
    (old / "search.json").write_text(json.dumps({"name": "old", "max_epochs": max_epochs}))
    space_file = root / "old.yaml"
    space_file.write_text(space_text)
    space = load_space(space_file)
    study = optuna.create_study(
        study_name="old", storage=f"sqlite:///{old / 'optuna.db'}", direction="maximize"
    )
    for trial_id, (params, status, accs) in trials.items():
        declared = {p.name: p for p in space.params}
        wide = {n: optuna.distributions.FloatDistribution(1e-3, 1.0, log=True) for n in ["lr"]}
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={n: wide.get(n, declared[n].distribution()) for n in params},
                value=accs[-1] if status == "finished" else None,
                state=State.COMPLETE if status == "finished" else State.PRUNED,
                user_attrs={"trial_id": trial_id, "status": status, "epochs": len(accs)},
            )
        )
        folder = old / f"trial_{trial_id}"
        folder.mkdir()
        rows = [
            {
                "training_iteration": e,
                "val_acc": a,
                "macs": 1000 + 10 * len(params),
                "trial_id": trial_id,
            }
            for e, a in enumerate(accs, 1)
        ]
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return old


def new_study(tmp_path, old, objectives="val_acc:max", max_epochs=3, space_text=SPACE):
    space_file = tmp_path / "new.yaml"
    space_file.write_text(space_text)
    storage = f"sqlite:///{tmp_path / 'new.db'}"
    seeded = seed_study(
        old, storage, "new", load_space(space_file), parse_objectives(objectives), max_epochs,
        enqueue_top=1,
    )  # fmt: skip
    return optuna.load_study(study_name="new", storage=storage), seeded


def test_finished_trials_enter_as_complete_and_the_best_stopped_one_is_enqueued(tmp_path):
    old = make_old(tmp_path)
    study, seeded = new_study(tmp_path, old)
    complete = study.get_trials(states=(State.COMPLETE,))
    assert sorted(t.params["lr"] for t in complete) == [0.01, 0.2]
    assert sorted(t.value for t in complete) == [0.7, 0.8]
    assert all(t.user_attrs[FROM_ATTR].startswith(str(old)) for t in complete)
    (waiting,) = study.get_trials(states=(State.WAITING,))
    assert waiting.params == {} and waiting.system_attrs["fixed_params"] == OLD["stop1"][0]
    assert seeded == "2 trial(s) added as completed, 1 enqueued, 1 outside the new space"


def test_two_objectives_take_their_values_from_the_trials_results(tmp_path):
    old = make_old(tmp_path)
    study, _ = new_study(tmp_path, old, "val_acc:max,macs:min")
    values = sorted(t.values for t in study.get_trials(states=(State.COMPLETE,)))
    assert values == [[0.7, 1020.0], [0.8, 1020.0]]


def test_a_chained_warm_start_reads_seeded_trials_where_they_ran(tmp_path):
    """old -> mid -> new: mid's trials seeded as completed never ran in mid; their results are
    in old's folders, and once those are gone the message counts them instead of losing them."""
    old = make_old(tmp_path)
    mid = tmp_path / "mid"
    mid.mkdir()
    (mid / "search.json").write_text(json.dumps({"name": "new", "max_epochs": 3}))
    new_study(tmp_path, old)
    (tmp_path / "new.db").rename(mid / "optuna.db")
    study, seeded = new_study(tmp_path, mid)
    complete = study.get_trials(states=(State.COMPLETE,))
    assert sorted(t.value for t in complete) == [0.7, 0.8]
    assert all(t.user_attrs[FROM_ATTR].startswith(str(old / "trial_")) for t in complete)
    assert seeded == "2 trial(s) added as completed, 0 enqueued, 0 outside the new space"
    for trial_id in ("done1", "done2"):
        (old / f"trial_{trial_id}" / "result.json").unlink()
    (tmp_path / "new.db").unlink()
    _, seeded = new_study(tmp_path, mid)
    assert seeded.endswith(", 2 without results to learn from")


def test_another_budget_enqueues_instead_of_completing(tmp_path):
    old = make_old(tmp_path)
    study, _ = new_study(tmp_path, old, max_epochs=6)
    assert not study.get_trials(states=(State.COMPLETE,))
    (waiting,) = study.get_trials(states=(State.WAITING,))
    assert waiting.system_attrs["fixed_params"] == OLD["done2"][0]  # the best by val_acc


@pytest.mark.parametrize(
    "change,words",
    [
        (("  lr: {", "  momentum: {type: uniform, low: 0.8, high: 0.95}\n  lr: {"),
         "the new space's 'momentum' was never searched in"),
        (("  attention.fusion: {type: choice, values: [sum, concat]}\n", ""),
         "searched 'attention.fusion', which the new space lacks"),
        (("{type: loguniform, low: 0.001, high: 0.5}", "{type: choice, values: [0.01, 0.1]}"),
         "'lr' is choice in the new space but was FloatDistribution in"),
    ],
)  # fmt: skip
def test_an_incompatible_space_is_refused_naming_the_parameter(tmp_path, change, words):
    old = make_old(tmp_path)
    new_space = tmp_path / "new.yaml"
    new_space.write_text(SPACE.replace(*change))
    cfg = SearchConfig(space=str(new_space), storage=str(tmp_path / "runs"), warm_start=str(old))
    with pytest.raises(ValueError, match="--warm-start") as err:
        prepare(cfg)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_folder_without_a_study_is_refused(tmp_path):
    cfg = SearchConfig(space="quick", storage=str(tmp_path / "runs"), warm_start=str(tmp_path))
    with pytest.raises(ValueError, match=r"holds no optuna\.db"):
        prepare(cfg)
    (tmp_path / "optuna.db").write_text("not a database")
    with pytest.raises(ValueError, match=r"--warm-start: .*optuna\.db is not an SQLite database"):
        prepare(cfg)
    (tmp_path / "optuna.db").write_bytes(b"SQLite format 3\x00" + bytes(2048))  # damaged
    with pytest.raises(ValueError, match=r"--warm-start: .*optuna\.db cannot be read: file is not"):
        prepare(cfg)


@pytest.mark.parametrize("text", ['{"name": "old", "max_ep', "[1]", '{"max_epochs": "three"}'])
def test_a_damaged_search_json_of_the_old_search_is_one_line_naming_it(tmp_path, text):
    old = make_old(tmp_path)
    (old / "search.json").write_text(text)
    space = str(tmp_path / "old.yaml")
    cfg = SearchConfig(space=space, storage=str(tmp_path / "runs"), warm_start=str(old))
    with pytest.raises(ValueError, match=r"--warm-start: cannot use .*search\.json") as err:
        prepare(cfg)
    assert "\n" not in str(err.value)
