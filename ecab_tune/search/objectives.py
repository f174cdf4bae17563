"""What a search optimises: `--objectives val_acc:max,macs:min`, parsed once at the edge.

The first objective is the one ASHA stops on, checkpoints are ranked by, and `best/` is chosen
by; with more than one, Optuna samples multi-objective and the search exports its Pareto set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from ecab_tune.engine import EpochResult

# Every metric a trial reports that is worth optimising: per epoch, and once per trial.
# `lr` is the schedule's, not an outcome.
PER_EPOCH = tuple(f.name for f in dataclasses.fields(EpochResult) if f.name not in ("epoch", "lr"))
PER_TRIAL = ("num_params", "macs", "latency_ms")
REPORTED = PER_EPOCH + PER_TRIAL
MODES = ("max", "min")
HIGHER_IS_BETTER = ("train_acc", "val_acc", "images_per_s")  # the others are losses and costs


def natural_mode(metric: str) -> Literal["max", "min"]:
    """Which way a reported metric is better (Ray's `time_*` seconds too); any other, max."""
    timed = metric.startswith("time_")
    return "min" if timed or (metric in REPORTED and metric not in HIGHER_IS_BETTER) else "max"


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: Literal["max", "min"]

    def __str__(self) -> str:
        return f"{self.metric}:{self.mode}"


def parse_objectives(text: str) -> tuple[Objective, ...]:
    """`val_acc:max,macs:min` -> objectives; a ValueError in the flag's terms otherwise."""
    objectives = []
    for item in (part.strip() for part in text.split(",")):
        metric, sep, mode = item.partition(":")
        if not sep or mode not in MODES:
            raise ValueError(
                f"--objectives: {item!r} must be METRIC:max or METRIC:min "
                "(e.g. val_acc:max,macs:min)"
            )
        if metric not in REPORTED:
            raise ValueError(
                f"--objectives: {metric!r} is not a reported metric; one of {', '.join(REPORTED)}"
            )
        if metric in (o.metric for o in objectives):
            raise ValueError(f"--objectives: {metric!r} is named twice")
        objectives.append(Objective(metric, mode))  # type: ignore[arg-type]
    return tuple(objectives)


def format_objectives(objectives: tuple[Objective, ...]) -> str:
    return ",".join(map(str, objectives))
