"""The Pareto set of a multi-objective search: which trials no other trial beats on every
objective. Pure functions of the trials' values; the search exports the members."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ecab_tune.search.objectives import Objective
from ecab_tune.search.results import finite


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """a is at least as good as b on every objective and better on one."""
    signs = [1 if m == "max" else -1 for m in modes]
    at_least = all(s * x >= s * y for s, x, y in zip(signs, a, b, strict=True))
    return at_least and any(s * x > s * y for s, x, y in zip(signs, a, b, strict=True))


def pareto_indices(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points, best on the first objective first; of equal points
    only the first is kept (one model per trade-off)."""
    finite = [i for i, p in enumerate(points) if all(math.isfinite(v) for v in p)]
    front = []
    for i in finite:
        if any(dominates(points[j], points[i], modes) for j in finite if j != i):
            continue
        if any(tuple(points[j]) == tuple(points[i]) for j in front):
            continue
        front.append(i)
    sign = -1 if modes[0] == "max" else 1
    return sorted(front, key=lambda i: (sign * points[i][0], i))


@dataclass(frozen=True)
class Member:
    """One Pareto-optimal trial: its Tune result, the checkpoint to export, and its values."""

    result: Any  # ray.tune.Result
    checkpoint: Any  # ray.tune.Checkpoint: the trial's best epoch by the first objective
    values: dict[str, float]


def pareto_members(
    results: Sequence[Any], objectives: Sequence[Objective], eligible: set[str]
) -> list[Member]:
    """The Pareto set among `results` whose trial ids are in `eligible` (full-budget trials:
    a stopped trial's accuracy was scored at a smaller budget). A trial's point is its best
    checkpoint by the first objective; the other objectives are read from the same report."""
    first = objectives[0]
    pick = max if first.mode == "max" else min
    candidates = []
    for result in results:
        trial_id = str((result.metrics or {}).get("trial_id", ""))
        kept = [(c, m) for c, m in (result.best_checkpoints or []) if finite(m.get(first.metric))]
        if trial_id not in eligible or not kept:
            continue
        chosen, metrics = pick(kept, key=lambda cm: cm[1][first.metric])
        if all(finite(metrics.get(o.metric)) for o in objectives):
            values = {o.metric: float(metrics[o.metric]) for o in objectives}
            candidates.append(Member(result, chosen, values))
    points = [[m.values[o.metric] for o in objectives] for m in candidates]
    return [candidates[i] for i in pareto_indices(points, [o.mode for o in objectives])]
