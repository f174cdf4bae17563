"""In-memory Optuna studies built from a report's numbers: what Optuna's importance evaluators
and `optuna.visualization.matplotlib` figures read. Each trial keeps its label (a trial id) as
the user attribute `label`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

LABEL = "label"


def _direction(mode: str) -> str:
    return "maximize" if mode == "max" else "minimize"


def quiet_study(modes: Sequence[str]) -> Any:
    """An empty in-memory study, one direction per mode, without Optuna's "study created" log
    line (a report prints only its own)."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(directions=[_direction(m) for m in modes])
    finally:
        optuna.logging.set_verbosity(verbosity)


def values_study(values: Sequence[float], labels: Sequence[str], mode: str) -> Any:
    """One complete trial per value, in the given order (Optuna numbers them 0, 1, ...)."""
    import optuna

    study = quiet_study([mode])
    study.add_trials(
        [
            optuna.trial.create_trial(value=v, user_attrs={LABEL: label})
            for v, label in zip(values, labels, strict=True)
        ]
    )
    return study


def curves_study(curves: Mapping[str, Mapping[int, float]], mode: str) -> Any:
    """One complete trial per label, its curve (epoch → value) as intermediate values and its
    best value as the trial's."""
    import optuna

    pick = max if mode == "max" else min
    study = quiet_study([mode])
    study.add_trials(
        [
            optuna.trial.create_trial(
                value=pick(curve.values()),
                intermediate_values=dict(curve),
                user_attrs={LABEL: label},
            )
            for label, curve in curves.items()
            if curve
        ]
    )
    return study


def tradeoff_study(
    costs: Sequence[float], values: Sequence[float], labels: Sequence[str], mode: str
) -> Any:
    """A two-objective study, cost (minimised) first and value (`mode`) second: one trial per
    point, in order."""
    import optuna

    study = quiet_study(["min", mode])
    study.add_trials(
        [
            optuna.trial.create_trial(values=[float(c), float(v)], user_attrs={LABEL: label})
            for c, v, label in zip(costs, values, labels, strict=True)
        ]
    )
    return study


def pareto_front(study: Any) -> list[int]:
    """Numbers of a tradeoff study's trials on its Pareto front (no other trial is cheaper or
    as cheap and better), cheapest first."""
    trials = study.get_trials(deepcopy=False)
    return sorted((t.number for t in study.best_trials), key=lambda n: (trials[n].values[0], n))
