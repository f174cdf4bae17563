from types import SimpleNamespace

from ecab_tune.search.objectives import parse_objectives
from ecab_tune.search.pareto import dominates, pareto_indices, pareto_members


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
