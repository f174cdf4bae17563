"""`--warm-start runs/<old>`: seed a new search's Optuna study with an earlier search's trials.

A trial of the old search that fits the new space (each parameter the new space samples, with
a value it could draw) and finished at the same epoch budget enters the new study as a
COMPLETE trial with its last reported objective values, so the sampler learns from it without
training it again. The best of the other fitting trials (stopped early, another budget, an
objective they never reported) are enqueued: the new search trains them first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from ecab_tune import experiment
from ecab_tune.config import is_int
from ecab_tune.experiment import OPTUNA_DB, SEARCH_FILE, TRIAL_PREFIX, optuna_storage
from ecab_tune.search.config import read_search_file
from ecab_tune.search.objectives import Objective
from ecab_tune.search.space import SearchSpace

FROM_ATTR = "warm_start_from"  # user attribute of a seeded trial: the old trial's folder


@dataclass(frozen=True)
class OldTrial:
    params: dict[str, Any]
    distributions: dict[str, Any]
    status: str
    epochs: int
    rows: list[dict[str, Any]]  # the old trial's reported results, one per epoch
    folder: Path


def load_old_trials(old_dir: Path) -> tuple[list[OldTrial], int]:
    """The old experiment's trials (those that drew parameters) and its epoch budget."""
    db = old_dir / OPTUNA_DB
    try:
        storage = optuna_storage(old_dir)
    except ValueError as exc:
        raise ValueError(f"--warm-start: {exc}") from exc
    names = optuna.get_all_study_names(storage)
    stored = _old_settings(old_dir)
    name = stored.get("name") if stored.get("name") in names else (names[0] if names else None)
    if name is None:
        raise ValueError(f"--warm-start: {db} holds no study")
    study = optuna.load_study(study_name=name, storage=storage)
    trials = []
    for trial in study.get_trials(deepcopy=False):
        if not trial.params:
            continue
        # The old experiment's own folder, wherever it was when it ran; a trial it was seeded
        # with as completed never ran there: its results are in the older search's folder.
        attrs = trial.user_attrs
        if "trial_id" not in attrs and FROM_ATTR in attrs:
            folder = Path(str(attrs[FROM_ATTR]))
        else:
            folder = old_dir / f"{TRIAL_PREFIX}{attrs.get('trial_id', '')}"
        trials.append(
            OldTrial(
                params=dict(trial.params),
                distributions=dict(trial.distributions),
                status=str(attrs.get("status", "")),
                epochs=int(attrs.get("epochs", 0)),
                rows=experiment.read_results(folder).rows,
                folder=folder,
            )
        )
    return trials, stored.get("max_epochs") or 0


def _old_settings(old_dir: Path) -> dict[str, Any]:
    """The old search's search.json; none for a search older than that file."""
    path = old_dir / SEARCH_FILE
    if not path.is_file():
        return {}
    try:
        stored = read_search_file(path)
        budget = stored.get("max_epochs")
        if budget is not None and not is_int(budget):
            raise ValueError(f"max_epochs {budget!r} is no whole number")
    except (OSError, ValueError) as exc:  # JSONDecodeError included
        raise ValueError(f"--warm-start: cannot use {path} ({exc})") from exc
    return stored


def check_compatible(old: Sequence[OldTrial], space: SearchSpace, old_dir: Path) -> None:
    """Refuse, naming the parameter, when the two spaces do not sample the same parameters of
    the same kind (ranges may differ: trials outside the new one are left out)."""
    new = {p.name: p for p in space.params}
    old_names = {n for t in old for n in t.params}
    for name in sorted(old_names - set(new)):
        raise ValueError(f"--warm-start: {old_dir} searched {name!r}, which the new space lacks")
    for name in sorted(set(new) - old_names):
        if not new[name].when:  # a conditional one may simply never have been active
            raise ValueError(
                f"--warm-start: the new space's {name!r} was never searched in {old_dir}"
            )
    for trial in old:
        for name, dist in trial.distributions.items():
            if type(dist) is not type(new[name].distribution()):
                raise ValueError(
                    f"--warm-start: {name!r} is {new[name].type} in the new space but was "
                    f"{type(dist).__name__} in {old_dir}"
                )


def fits(trial: OldTrial, space: SearchSpace) -> bool:
    """The new space would sample exactly these parameters and could draw each value."""
    chosen = space.fixed_choices() | trial.params
    active = {p.name for p in space.params if p.active(chosen)}
    if active != set(trial.params):
        return False
    return all(p.contains(trial.params[p.name]) for p in space.params if p.name in active)


def _last(trial: OldTrial, metric: str) -> float | None:
    value = trial.rows[-1].get(metric) if trial.rows else None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _best(trial: OldTrial, objective: Objective) -> float | None:
    values = [
        float(r[objective.metric])
        for r in trial.rows
        if isinstance(r.get(objective.metric), int | float) and math.isfinite(r[objective.metric])
    ]
    if not values:
        return None
    return max(values) if objective.mode == "max" else min(values)


def seed_study(
    old_dir: Path,
    storage: Any,
    study_name: str,
    space: SearchSpace,
    objectives: Sequence[Objective],
    max_epochs: int,
    *,
    enqueue_top: int,
) -> str:
    """Create the new study in `storage` seeded from `old_dir`; returns what was seeded."""
    old, old_budget = load_old_trials(old_dir)
    check_compatible(old, space, old_dir)
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        directions=["maximize" if o.mode == "max" else "minimize" for o in objectives],
        load_if_exists=True,
    )
    declared = {p.name: p for p in space.params}
    fitting = [t for t in old if fits(t, space)]
    added, others = 0, []
    for trial in fitting:
        values = [_last(trial, o.metric) for o in objectives]
        comparable = (
            trial.status == experiment.FINISHED
            and old_budget == max_epochs
            and trial.epochs == max_epochs
        )
        if not comparable or any(v is None for v in values):
            others.append(trial)
            continue
        study.add_trial(
            optuna.trial.create_trial(
                params=trial.params,
                distributions={n: declared[n].distribution() for n in trial.params},
                values=values,
                user_attrs={
                    FROM_ATTR: str(trial.folder),
                    "status": experiment.FINISHED,
                    "epochs": trial.epochs,
                },
            )
        )
        added += 1
    first = objectives[0]
    scored = [(t, _best(t, first)) for t in others]
    ranked = sorted(
        (ts for ts in scored if ts[1] is not None),
        key=lambda ts: -ts[1] if first.mode == "max" else ts[1],  # type: ignore[operator]
    )
    for trial, _ in ranked[:enqueue_top]:
        study.enqueue_trial(trial.params, user_attrs={FROM_ATTR: str(trial.folder)})
    enqueued = min(enqueue_top, len(ranked))
    unscored = len(scored) - len(ranked)  # e.g. results of an older search since deleted
    return (
        f"{added} trial(s) added as completed, {enqueued} enqueued, "
        f"{len(old) - len(fitting)} outside the new space"
        + (f", {unscored} without results to learn from" if unscored else "")
    )
