"""The study file: recipe, budget, seeds and every arm's options, fixed before the first run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ecab_tune.config import DATA_LOCATION, DataConfig, TrainConfig, from_dict, to_dict
from ecab_tune.models import ModelConfig, list_models

_STUDY_KEYS = {
    "name", "question", "model", "width", "data", "train", "seeds", "baseline", "focus", "arms",
    "ablations", "convergence", "criteria",
}  # fmt: skip
GROUPS = ("main", "ablation", "convergence")  # what a run is for, in a study
# Recipe fields added after runs were recorded, with the one value every run had before: a
# row keyed before a field existed (the 30-epoch pilot's, before `compile`) is still the run
# of a study that keeps that value.
ADDED_LATER = {"compile": False}


@dataclass(frozen=True)
class Arm:
    """One variant of the study: an attention module with all of its options spelled out."""

    attention: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """One training run: an arm at a seed for a number of epochs."""

    arm: str
    seed: int
    epochs: int
    group: str  # one of GROUPS


@dataclass(frozen=True)
class Criteria:
    """When the study has answered its question, fixed with its design. No run's identity
    depends on it: the report only says, for each, met / not met / pending."""

    baseline_min_test_pct: float | None = None  # the baseline's mean test accuracy, all seeds
    max_ci_half_width_points: float | None = None  # paired 95% CI of focus − each of ci_arms
    ci_arms: tuple[str, ...] = ()
    convergence_max_gain_points: float | None = None  # doubling the epochs adds less

    def __post_init__(self) -> None:
        for name in (
            "baseline_min_test_pct",
            "max_ci_half_width_points",
            "convergence_max_gain_points",
        ):
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if value is not None and not (number and value > 0):
                raise ValueError(f"criteria.{name}={value!r} must be a positive number")
        if self.ci_arms and self.max_ci_half_width_points is None:
            raise ValueError("criteria.ci_arms needs max_ci_half_width_points")


@dataclass(frozen=True)
class StudySpec:
    name: str
    model: str
    width: float
    data: DataConfig
    train: TrainConfig  # every run's recipe; its seed and epochs are the job's
    seeds: int
    baseline: str
    focus: str
    arms: dict[str, Arm]
    ablation_seeds: int = 0
    ablations: dict[str, Arm] = field(default_factory=dict)
    convergence_arm: str | None = None
    convergence_seeds: int = 0
    convergence_epochs: int = 0
    criteria: Criteria = Criteria()
    question: str = ""

    def __post_init__(self) -> None:
        if self.model not in list_models():
            raise ValueError(f"model={self.model!r} is unknown; available: {list_models()}")
        if self.seeds < 1:
            raise ValueError(f"seeds={self.seeds} must be >= 1")
        for role, arm in (("baseline", self.baseline), ("focus", self.focus)):
            if arm not in self.arms:
                raise ValueError(f"{role}={arm!r} is not one of the arms: {', '.join(self.arms)}")
        for what, n in (
            ("ablations.seeds", self.ablation_seeds),
            ("convergence.seeds", self.convergence_seeds),
        ):
            if n > self.seeds:  # their runs pair with the main runs of the same seeds
                raise ValueError(f"{what}={n} exceeds seeds={self.seeds}: it pairs with main runs")
        clash = sorted(set(self.arms) & set(self.ablations))
        if clash:
            raise ValueError(f"ablation arm(s) {', '.join(clash)} repeat a main arm's name")
        if self.convergence_arm is not None:
            if self.convergence_arm not in self.arms:
                raise ValueError(f"convergence arm {self.convergence_arm!r} is not a main arm")
            if self.convergence_epochs <= self.train.epochs:
                raise ValueError("convergence epochs must exceed the study's epochs")
        bad = [a for a in self.criteria.ci_arms if a not in self.arms or a == self.focus]
        if bad:
            raise ValueError(f"criteria.ci_arms: {bad[0]!r} is not a main arm other than the focus")
        for label in self.all_arms():
            self.model_config(label, num_classes=10, in_chans=1).build()  # options fail now

    def all_arms(self) -> dict[str, Arm]:
        return {**self.arms, **self.ablations}

    def model_config(self, label: str, num_classes: int, in_chans: int) -> ModelConfig:
        arm = self.all_arms()[label]
        return ModelConfig(
            self.model, arm.attention, dict(arm.options), self.width, num_classes, in_chans
        )

    def jobs(self) -> list[Job]:
        """Every run, longest-first where it helps: the convergence check, then seed-major
        (whatever finished first is already paired across arms), then the ablations."""
        jobs = [
            Job(self.convergence_arm, s, self.convergence_epochs, "convergence")
            for s in range(self.convergence_seeds)
            if self.convergence_arm is not None
        ]
        jobs += [Job(a, s, self.train.epochs, "main") for s in range(self.seeds) for a in self.arms]
        jobs += [
            Job(a, s, self.train.epochs, "ablation")
            for s in range(self.ablation_seeds)
            for a in self.ablations
        ]
        return jobs

    def run_keys(self, job: Job) -> set[str]:
        """The keys a row of `job` may carry: today's, and that of rows made before the
        `ADDED_LATER` fields existed, where the study keeps their earlier value."""
        kept = tuple(k for k, v in ADDED_LATER.items() if getattr(self.train, k) == v)
        return {self.run_key(job), self.run_key(job, without=kept)}

    def run_key(self, job: Job, without: tuple[str, ...] = ()) -> str:
        """A hash of everything that makes a run what it is, but its seed: rows made under
        another recipe, data or option never mix with this study's."""
        arm = self.all_arms()[job.arm]
        train = dataclasses.replace(self.train, epochs=job.epochs, seed=0)
        left_out = ("cuda_graphs", *without)
        identity = {
            "model": self.model,
            "width": self.width,
            "attention": arm.attention,
            "options": arm.options,
            # Where the files lie is no part of the run: a study moves between machines.
            "data": {k: v for k, v in to_dict(self.data).items() if k not in DATA_LOCATION},
            # How a step is launched is no part of it either (a replayed graph runs the step).
            "train": {k: v for k, v in to_dict(train).items() if k not in left_out},
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]

    def overridden(self, **changes: Any) -> StudySpec:
        """A copy for a small run (`--seeds`, `--epochs`, `--subset`, `--arms`)."""
        spec = self
        if changes.get("epochs") is not None:
            epochs = changes["epochs"]
            train = dataclasses.replace(
                spec.train, epochs=epochs, warmup_epochs=min(spec.train.warmup_epochs, epochs)
            )
            spec = dataclasses.replace(spec, train=train, convergence_epochs=2 * epochs)
        if changes.get("subset") is not None:
            spec = dataclasses.replace(
                spec, data=dataclasses.replace(spec.data, subset=changes["subset"])
            )
        if changes.get("seeds") is not None:
            spec = dataclasses.replace(
                spec,
                seeds=changes["seeds"],
                ablation_seeds=min(spec.ablation_seeds, changes["seeds"]),
                convergence_seeds=min(spec.convergence_seeds, changes["seeds"]),
            )
        if changes.get("arms"):
            unknown = sorted(set(changes["arms"]) - set(spec.all_arms()))
            if unknown:
                raise ValueError(f"--arms: no arm {unknown[0]!r}; the study has {spec.labels()}")
            keep = set(changes["arms"]) | {spec.baseline, spec.focus}
            spec = dataclasses.replace(
                spec,
                arms={k: v for k, v in spec.arms.items() if k in keep},
                ablations={k: v for k, v in spec.ablations.items() if k in keep},
                convergence_arm=spec.convergence_arm if spec.convergence_arm in keep else None,
                criteria=dataclasses.replace(
                    spec.criteria, ci_arms=tuple(a for a in spec.criteria.ci_arms if a in keep)
                ),
            )
        return spec

    def labels(self) -> str:
        return ", ".join(self.all_arms())


def _arms(raw: Any, where: str) -> dict[str, Arm]:
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{where} must be a mapping of arm name to {{attention, options}}")
    arms = {}
    for label, body in raw.items():
        if not isinstance(body, dict) or "attention" not in body:
            raise ValueError(f"{where}.{label} needs an `attention` (and optional `options`)")
        unknown = sorted(set(body) - {"attention", "options"})
        if unknown:
            raise ValueError(f"{where}.{label}: unknown key {unknown[0]!r}")
        arms[str(label)] = Arm(str(body["attention"]), dict(body.get("options") or {}))
    return arms


def parse_spec(raw: Any, where: str = "the study file") -> StudySpec:
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a YAML mapping")
    unknown = sorted(set(raw) - _STUDY_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
    missing = sorted({"name", "model", "arms", "baseline", "focus"} - set(raw))
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
    ablations = raw.get("ablations") or {}
    convergence = raw.get("convergence") or {}
    return StudySpec(
        name=str(raw["name"]),
        question=str(raw.get("question", "")),
        model=str(raw["model"]),
        width=float(raw.get("width", 1.0)),
        data=from_dict(DataConfig, dict(raw.get("data") or {}), where=f"{where}: data"),
        train=from_dict(TrainConfig, dict(raw.get("train") or {}), where=f"{where}: train"),
        seeds=int(raw.get("seeds", 5)),
        baseline=str(raw["baseline"]),
        focus=str(raw["focus"]),
        arms=_arms(raw["arms"], "arms"),
        ablation_seeds=int(ablations.get("seeds", 0)),
        ablations=_arms(ablations["arms"], "ablations.arms") if ablations else {},
        convergence_arm=convergence.get("arm"),
        convergence_seeds=int(convergence.get("seeds", 1)) if convergence else 0,
        convergence_epochs=int(convergence.get("epochs", 0)),
        criteria=from_dict(Criteria, raw.get("criteria") or {}, where=f"{where}: criteria"),
    )


def load_spec(path: str | Path) -> StudySpec:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"study file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    try:
        return parse_spec(raw, str(path))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
