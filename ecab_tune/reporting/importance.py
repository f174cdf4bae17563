"""Parameter importances of a search: Optuna's evaluators on a study rebuilt from the trials'
records, at an epoch budget every compared trial reached."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ecab_tune.experiment import DIVERGED, ENDED, ERRORED
from ecab_tune.reporting.document import epochs_text
from ecab_tune.reporting.optuna_studies import quiet_study
from ecab_tune.reporting.trials import Experiment, TrialRecord
from ecab_tune.search.space import Param


@dataclass(frozen=True)
class Importances:
    values: dict[str, float]  # per parameter, most important first; empty: none computed
    how: str  # how they were computed, or why they could not be
    budget: int = 0  # the epochs the compared trials were scored within
    study: Any = field(default=None, repr=False)  # the optuna.Study they were computed on
    evaluator: Any = field(default=None, repr=False)  # the optuna evaluator that computed them


def _distribution(values: Sequence[Any], declared: Param | None) -> Any:
    """The space's distribution when the values fit it (the file may have changed since the
    search ran), else one spanning the observed values."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if declared is not None and all(declared.contains(v) for v in values):
        return declared.distribution()
    if not numbers:
        return CategoricalDistribution(sorted(set(values), key=str))
    return FloatDistribution(min(values), max(values))


def common_budget(exp: Experiment, metric: str) -> int:
    """The epochs every trial that can be ranked reached (0: none can); while the search runs,
    every one that ended (a trial that just started would hold the budget at 1)."""
    usable = _usable(exp, metric)
    ended = [t for t in usable if t.status in ENDED] or usable
    return min((t.epochs for t in ended), default=0)


def _usable(exp: Experiment, metric: str) -> list[TrialRecord]:
    return [t for t in exp.trials if t.status not in (DIVERGED, ERRORED) and t.values(metric)]


def comparable_trials(
    exp: Experiment, metric: str, budget: int | None = None
) -> tuple[list[TrialRecord], int]:
    """The trials whose parameters can be ranked, and the epoch budget to compare them at:
    `budget`, else the full budget when two trials reached it, else the common budget."""
    usable = _usable(exp, metric)
    # Stopped trials scored after fewer epochs would rank budget, not parameters: compare the
    # trials that reached one budget, each by its best value within it.
    if budget is None:
        full = [t for t in usable if t.epochs >= exp.max_epochs]
        budget = exp.max_epochs if len(full) >= 2 else common_budget(exp, metric)
    return [t for t in usable if t.epochs >= budget], budget


def param_importances(
    exp: Experiment, metric: str, mode: str, budget: int | None = None
) -> Importances:
    """The importance of each parameter that varied among the trials compared at `budget`
    (as `comparable_trials` picks it), by the first evaluator that runs here."""
    import optuna

    compared, budget = comparable_trials(exp, metric, budget)
    if len(compared) < 2:
        return Importances(
            {}, f"needs 2 trials with {metric} at the same budget; there are {len(compared)}"
        )
    names = [
        n
        for n in compared[0].params
        if all(n in t.params for t in compared) and len({repr(t.params[n]) for t in compared}) > 1
    ]
    if not names:
        return Importances(
            {}, f"every parameter took one value across the {len(compared)} compared trials"
        )
    declared = {p.name: p for p in exp.space.params} if exp.space else {}
    distributions = {
        n: _distribution([t.params[n] for t in compared], declared.get(n)) for n in names
    }
    study = quiet_study([mode])
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={n: t.params[n] for n in names},
                distributions=distributions,
                value=t.best(metric, mode, upto=budget),
            )
            for t in compared
        ]
    )
    how = f"{len(compared)} trials' best {metric} within {epochs_text(budget)}" + (
        " (reached by every trial that ended)"
        if budget < exp.max_epochs and budget == common_budget(exp, metric)
        else ""
    )
    # Optuna's evaluators take only parameters every trial has: say which `when` left out.
    drawn = {n for t in compared for n in t.params}
    conditional = sorted(n for n in drawn if not all(n in t.params for t in compared))
    if conditional:
        how += f"; left out, drawn by only some trials: {', '.join(conditional)}"
    failures = []
    # fANOVA and mean decrease impurity fit scikit-learn forests (their constructors import
    # it); PED-ANOVA needs only numpy, so an image without scikit-learn still gets importances.
    for name, make in (
        ("FanovaImportanceEvaluator", lambda: optuna.importance.FanovaImportanceEvaluator(seed=0)),
        (
            "MeanDecreaseImpurityImportanceEvaluator",
            lambda: optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0),
        ),
        ("PedAnovaImportanceEvaluator", optuna.importance.PedAnovaImportanceEvaluator),
    ):
        try:
            evaluator = make()
            values = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except (ImportError, ValueError, RuntimeError) as exc:
            failures.append(f"{name}: {exc}")
            continue
        fallback = f"; fANOVA failed: {failures[0]}" if failures else ""
        return Importances(values, f"{name} over {how}{fallback}", budget, study, evaluator)
    return Importances({}, "; ".join(failures))
