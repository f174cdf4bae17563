from types import SimpleNamespace

import pytest

from ecab_tune.objectives import Objective, parse_objectives
from ecab_tune.pareto import dominates, pareto_indices, pareto_members
from ecab_tune.search import SearchConfig, main


def test_objectives_parse_in_order_and_the_first_leads():
    cfg = SearchConfig(objectives="val_acc:max, macs:min,latency_ms:min")
    assert cfg.objective_list == (
        Objective("val_acc", "max"),
        Objective("macs", "min"),
        Objective("latency_ms", "min"),
    )
    assert cfg.primary == Objective("val_acc", "max")


@pytest.mark.parametrize(
    "text,words",
    [
        ("val_acc", "'val_acc' must be METRIC:max or METRIC:min"),
        ("val_acc:up", "'val_acc:up' must be METRIC:max or METRIC:min"),
        ("accuracy:max", "'accuracy' is not a reported metric; one of train_loss"),
        ("macs:min,macs:max", "'macs' is named twice"),
    ],
)
def test_bad_objectives_are_one_line_errors_naming_the_problem(text, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--objectives", text])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert "latency_ms" in parse_objectives("latency_ms:min")[0].metric


def test_help_shows_the_new_flags(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--objectives", "--warm-start", "--tracker"):
        assert flag in out
    assert "{none,tensorboard,mlflow}" in out


def test_the_space_metric_is_the_default_objective():
    from ecab_tune.space import load_space

    cfg = SearchConfig(space="quick").resolved(load_space("quick"))
    assert cfg.objectives == "val_acc:max" and len(cfg.objective_list) == 1


def test_pareto_keeps_the_non_dominated_points_best_first_on_the_first_objective():
    # (val_acc, macs): c is dominated by a (better and cheaper), e repeats b.
    points = [(0.90, 200), (0.80, 100), (0.85, 300), (0.95, 400), (0.80, 100), (float("nan"), 1)]
    assert pareto_indices(points, ["max", "min"]) == [3, 0, 1]
    assert dominates((0.9, 200), (0.85, 300), ["max", "min"])
    assert not dominates((0.9, 200), (0.9, 200), ["max", "min"])
    assert pareto_indices([(0.1, 5.0)], ["min", "min"]) == [0]


def _result(trial_id, epochs):
    """A stand-in for a Tune result: (checkpoint, metrics) per kept epoch."""
    kept = [(f"{trial_id}@{e}", {"val_acc": acc, "macs": macs}) for e, (acc, macs) in epochs]
    return SimpleNamespace(metrics={"trial_id": trial_id}, best_checkpoints=kept)


def test_members_are_full_budget_trials_at_their_best_epoch():
    results = [
        _result("a", [(1, (0.70, 200)), (2, (0.80, 200))]),  # best epoch 2
        _result("b", [(1, (0.75, 100)), (2, (0.72, 100))]),  # best epoch 1
        _result("c", [(1, (0.60, 300)), (2, (0.65, 300))]),  # dominated by a
        _result("stopped", [(1, (0.99, 50))]),  # scored at a smaller budget
    ]
    objectives = parse_objectives("val_acc:max,macs:min")
    members = pareto_members(results, objectives, eligible={"a", "b", "c"})
    assert [m.checkpoint for m in members] == ["a@2", "b@1"]
    assert members[0].values == {"val_acc": 0.80, "macs": 200.0}


def test_with_two_objectives_stopped_trials_still_reach_optuna_as_pruned():
    import optuna

    from ecab_tune.tuning import BudgetAwareOptunaSearch

    searcher = BudgetAwareOptunaSearch(
        space=lambda t: {"lr": t.suggest_float("lr", 1e-3, 1.0, log=True)},
        sampler=optuna.samplers.TPESampler(seed=0),
        max_epochs=2,
        metric=["val_acc", "macs"],
        mode=["max", "min"],
    )
    for trial_id, accs in (("full", [0.5, 0.7]), ("stopped", [0.3])):
        searcher.suggest(trial_id)
        for epoch, acc in enumerate(accs, 1):
            result = {"val_acc": acc, "macs": 100, "latency_ms": 0.5, "training_iteration": epoch}
            searcher.on_trial_result(trial_id, result)
        searcher.on_trial_complete(trial_id, result)
    full, stopped = searcher._ot_study.get_trials()
    assert full.state == optuna.trial.TrialState.COMPLETE and full.values == [0.7, 100]
    assert stopped.state == optuna.trial.TrialState.PRUNED and stopped.values is None
    # Optuna keeps no per-epoch values with two objectives; the curve is a user attribute.
    assert full.user_attrs["curve"] == {"1": [0.5, 100], "2": [0.7, 100]}
    assert stopped.user_attrs["latency_ms"] == 0.5 and stopped.user_attrs["epochs"] == 1
    assert "lr" in searcher.suggest("next")  # TPE samples on from a study with a pruned trial


@pytest.mark.parametrize("tracker,module", [("tensorboard", "tensorboardX"), ("mlflow", "mlflow")])
def test_a_tracker_without_its_package_is_refused_before_the_search(
    tracker, module, monkeypatch, tmp_path, capsys
):
    monkeypatch.setitem(__import__("sys").modules, module, None)  # as if not installed
    with pytest.raises(SystemExit) as exit_:
        main(["--space", "quick", "--storage", str(tmp_path), "--tracker", tracker])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"--tracker {tracker} needs {module}: pip install 'ecab_tune[trackers]'" in err
    assert not any(tmp_path.iterdir())
