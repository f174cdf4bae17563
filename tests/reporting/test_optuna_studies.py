"""In-memory studies for Optuna's evaluators and figures (`ecab_tune.reporting.optuna_studies`)."""

from ecab_tune.reporting.optuna_studies import LABEL, curves_study, pareto_front, tradeoff_study


def test_pareto_front_keeps_the_best_value_for_each_cost():
    costs, accs = [1, 1, 2, 3, 3], [0.5, 0.6, 0.55, 0.9, 0.8]
    labels = [str(i) for i in range(len(costs))]
    assert pareto_front(tradeoff_study(costs, accs, labels, "max")) == [1, 3]
    assert pareto_front(tradeoff_study(costs, [1 - a for a in accs], labels, "min")) == [1, 3]


def test_a_curve_is_a_trials_intermediate_values_and_its_best_its_value():
    study = curves_study({"a1": {1: 0.7, 2: 0.8}, "b2": {}, "c3": {1: 0.4, 2: 0.3}}, "max")
    trials = study.get_trials()
    assert [t.user_attrs[LABEL] for t in trials] == ["a1", "c3"]  # nothing reported: no trial
    assert trials[0].intermediate_values == {1: 0.7, 2: 0.8} and trials[0].value == 0.8
    assert trials[1].value == 0.4
