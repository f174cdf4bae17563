"""Search spaces as YAML files: loaded, validated once, then sampled define-by-run.

A space file has four sections:

    description: one line
    defaults:    model, attention, dataset, budget, fixed recipe (`train`, `attention_kwargs`)
    scheduler:   ASHA settings (grace_period, reduction_factor)
    params:      name -> {type, low/high | values, when}

Parameter names are TrainConfig fields (`lr`, `batch_size`, ...), `model`, `width`, `attention`
or `attention.<option>` (an option of the attention module). `when: {name: value-or-list}`
samples a parameter only when an earlier one took one of those values (Optuna define-by-run).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ecab_tune.config import TrainConfig
from ecab_tune.models import ModelConfig, list_attentions, list_models, model_params

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"  # the repository's
PARAM_TYPES = ("uniform", "loguniform", "int", "logint", "choice")
SEARCHERS = ("optuna", "random", "grid")
ATTN_PREFIX = "attention."
MODEL_KEYS = ("model", "width", "attention")
# Set by the search itself, never by a space: epochs from the budget, seed per trial.
TRAIN_KEYS = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("epochs", "seed")
)
SECTIONS = ("description", "defaults", "scheduler", "params")


class SpaceError(ValueError):
    """A search-space file that does not validate; the message names file, key and remedy."""


@dataclass(frozen=True)
class Defaults:
    model: str = "resnet20"
    attention: str = "ecab"
    width: float = 1.0
    dataset: str = "fashion-mnist"
    subset: int | None = None
    max_epochs: int = 10
    num_samples: int = 16
    searcher: str = "optuna"
    metric: str = "val_acc"
    mode: str = "max"
    train: dict[str, Any] = field(default_factory=dict)
    attention_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SchedulerSettings:
    grace_period: int = 1
    reduction_factor: float = 3.0


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def active(self, chosen: dict[str, Any]) -> bool:
        return all(chosen.get(k) in allowed for k, allowed in self.when.items())

    def suggest(self, trial: Any) -> Any:
        """Draw from an `optuna.Trial` (or Ray's capturing proxy of one)."""
        if self.type == "choice":
            return trial.suggest_categorical(self.name, list(self.values))
        if self.type in ("int", "logint"):
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), log=self.type == "logint"
            )
        return trial.suggest_float(self.name, self.low, self.high, log=self.type == "loguniform")

    def distribution(self) -> Any:
        """The Optuna distribution `suggest` draws from."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.type == "choice":
            return CategoricalDistribution(self.values)
        if self.type in ("int", "logint"):
            return IntDistribution(int(self.low), int(self.high), log=self.type == "logint")
        return FloatDistribution(self.low, self.high, log=self.type == "loguniform")

    def contains(self, value: Any) -> bool:
        """Whether `suggest` could have drawn `value` (e.g. a trial of an earlier search)."""
        if self.type == "choice":
            return value in self.values
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        if self.type in ("int", "logint") and value != int(value):
            return False
        return float(self.low) <= value <= float(self.high)

    def extremes(self) -> tuple[Any, ...]:
        return self.values if self.type == "choice" else (self.low, self.high)


@dataclass(frozen=True)
class SearchSpace:
    name: str
    path: Path
    description: str
    defaults: Defaults
    scheduler: SchedulerSettings
    params: tuple[Param, ...]

    def sample(self, trial: Any) -> dict[str, Any]:
        """Define-by-run: each parameter is drawn only when its `when` holds."""
        chosen = self.fixed_choices()
        for param in self.params:
            if param.active(chosen):
                chosen[param.name] = param.suggest(trial)
        return {p.name: chosen[p.name] for p in self.params if p.name in chosen}

    def fixed_choices(self) -> dict[str, Any]:
        d = self.defaults
        return {
            "model": d.model,
            "width": d.width,
            "attention": d.attention,
            **{ATTN_PREFIX + k: v for k, v in d.attention_kwargs.items()},
            **d.train,
        }

    def grid(self) -> dict[str, list[Any]]:
        """Optuna's GridSampler space; only unconditional choices can form a grid."""
        bad = [p.name for p in self.params if p.type != "choice" or p.when]
        if bad:
            raise SpaceError(
                f"{self.path}: the grid searcher needs unconditional choice "
                f"parameters; not: {', '.join(bad)}"
            )
        return {p.name: list(p.values) for p in self.params}

    def resolve(
        self, params: dict[str, Any], *, num_classes: int, in_chans: int, epochs: int, seed: int
    ) -> tuple[ModelConfig, TrainConfig]:
        """Turn sampled parameters into the configs a single run takes."""
        chosen = {**self.fixed_choices(), **params}
        attention_kwargs = {
            k[len(ATTN_PREFIX) :]: v for k, v in chosen.items() if k.startswith(ATTN_PREFIX)
        }
        if chosen["attention"] in ("none", "ecab_head"):
            attention_kwargs = {}
        model = ModelConfig(
            chosen["model"],
            chosen["attention"],
            attention_kwargs,
            float(chosen["width"]),
            num_classes=num_classes,
            in_chans=in_chans,
        )
        train = TrainConfig(
            epochs=epochs, seed=seed, **{k: v for k, v in chosen.items() if k in TRAIN_KEYS}
        )
        return model, train


def resolve_path(space: str | Path) -> Path:
    """A bare name means `search_spaces/<name>.yaml`; anything else is a path."""
    path = Path(space)
    if path.suffix not in (".yaml", ".yml"):
        # ./search_spaces first: an installed package (Docker image) runs from the project root.
        candidates = [Path("search_spaces") / f"{space}.yaml", SPACES_DIR / f"{space}.yaml"]
        path = next((p for p in candidates if p.is_file()), candidates[-1])
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
        raise SpaceError(
            f"search space {space!r} not found (looked for {path}); built-in spaces: {known}"
        )
    return path


def load_space(space: str | Path) -> SearchSpace:
    path = resolve_path(space)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpaceError(f"{path}: not valid YAML: {exc}") from exc
    return _Validator(path).space(raw)


class _Validator:
    """Checks one file; every error names the file, the key and what is allowed."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, problem: str) -> SpaceError:
        return SpaceError(f"{self.path}: {key}: {problem}")

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise self.fail(
                f"{key}.{unknown[0]}" if key else unknown[0],
                f"unknown key; allowed: {', '.join(allowed)}",
            )
        return value

    def space(self, raw: Any) -> SearchSpace:
        raw = self.mapping(raw, "", SECTIONS)
        defaults = self.defaults(raw.get("defaults"))
        scheduler = self.scheduler(raw.get("scheduler"))
        params = self.params(raw.get("params"), defaults)
        return SearchSpace(
            self.path.stem, self.path, str(raw.get("description", "")), defaults, scheduler, params
        )

    def defaults(self, raw: Any) -> Defaults:
        allowed = tuple(f.name for f in dataclasses.fields(Defaults))
        raw = self.mapping(raw, "defaults", allowed)
        self.mapping(raw.get("train"), "defaults.train", TRAIN_KEYS)
        try:
            d = Defaults(**raw)
        except TypeError as exc:
            raise self.fail("defaults", str(exc)) from exc
        self.member("defaults.model", d.model, list_models())
        self.member("defaults.attention", d.attention, list_attentions())
        self.member("defaults.searcher", d.searcher, SEARCHERS)
        self.member("defaults.mode", d.mode, ("max", "min"))
        for key, value, low in (("max_epochs", d.max_epochs, 1), ("num_samples", d.num_samples, 1)):
            if not isinstance(value, int) or value < low:
                raise self.fail(f"defaults.{key}", f"{value!r} must be an integer >= {low}")
        self.attention_options(
            "defaults.attention_kwargs", d.attention_kwargs, d.model, (d.attention,)
        )
        self.train_values("defaults.train", d.train)
        return d

    def scheduler(self, raw: Any) -> SchedulerSettings:
        raw = self.mapping(raw, "scheduler", ("grace_period", "reduction_factor"))
        s = SchedulerSettings(**raw)
        if not isinstance(s.grace_period, int) or s.grace_period < 1:
            raise self.fail("scheduler.grace_period", f"{s.grace_period!r} must be an int >= 1")
        if not isinstance(s.reduction_factor, (int, float)) or s.reduction_factor <= 1:
            raise self.fail(
                "scheduler.reduction_factor", f"{s.reduction_factor!r} must be a number > 1"
            )
        return s

    def member(self, key: str, value: Any, allowed: Any) -> None:
        if value not in allowed:
            raise self.fail(
                key, f"{value!r} is not allowed; allowed: {', '.join(map(str, allowed))}"
            )

    def attention_options(
        self, key: str, options: dict[str, Any], model: str, attentions: tuple[str, ...]
    ) -> None:
        for attention in attentions:
            allowed = model_params(model, attention) - {"num_classes", "in_chans", "width"}
            for option in options:
                if option not in allowed:
                    raise self.fail(
                        f"{key}.{option}" if "." not in key else key,
                        f"attention {attention!r} takes no option {option!r}; "
                        f"it takes: {', '.join(sorted(allowed)) or 'none'}",
                    )

    def train_values(self, key: str, values: dict[str, Any]) -> None:
        try:
            TrainConfig(**{"epochs": 100, **values})
        except (TypeError, ValueError) as exc:
            raise self.fail(key, str(exc)) from exc

    def params(self, raw: Any, defaults: Defaults) -> tuple[Param, ...]:
        if not isinstance(raw, dict) or not raw:
            raise self.fail("params", "expected a non-empty mapping of parameter name -> spec")
        params: list[Param] = []
        for name, spec in raw.items():
            params.append(self.param(str(name), spec, params, defaults))
        return tuple(params)

    def param(self, name: str, spec: Any, earlier: list[Param], defaults: Defaults) -> Param:
        key = f"params.{name}"
        if name not in (*MODEL_KEYS, *TRAIN_KEYS) and not name.startswith(ATTN_PREFIX):
            raise self.fail(
                key,
                "unknown parameter; allowed: "
                f"{', '.join((*MODEL_KEYS, *TRAIN_KEYS))} or attention.<option>",
            )
        spec = self.mapping(spec, key, ("type", "low", "high", "values", "when"))
        kind = spec.get("type")
        self.member(f"{key}.type", kind, PARAM_TYPES)
        when = self.when(key, spec.get("when"), earlier)
        if kind == "choice":
            values = spec.get("values")
            if not isinstance(values, list) or not values:
                raise self.fail(f"{key}.values", "a choice needs a non-empty list of values")
            if len(set(map(repr, values))) != len(values):
                raise self.fail(f"{key}.values", f"duplicate values in {values}")
            param = Param(name, kind, values=tuple(values), when=when)
        else:
            param = Param(
                name, kind, self.bound(key, spec, "low"), self.bound(key, spec, "high"), when=when
            )
            if param.low >= param.high:
                raise self.fail(key, f"low ({param.low}) must be < high ({param.high})")
            if kind in ("loguniform", "logint") and param.low <= 0:
                raise self.fail(f"{key}.low", f"a log range must stay above 0, got {param.low}")
            if kind in ("int", "logint") and not all(
                float(v).is_integer() for v in (param.low, param.high)
            ):
                raise self.fail(key, "an int range needs integer bounds")
        self.check_values(param, earlier, defaults)
        return param

    def bound(self, key: str, spec: dict[str, Any], which: str) -> float:
        value = spec.get(which)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise self.fail(f"{key}.{which}", f"expected a finite number, got {value!r}")
        return float(value)

    def when(self, key: str, raw: Any, earlier: list[Param]) -> dict[str, tuple[Any, ...]]:
        if raw is None:
            return {}
        if not isinstance(raw, dict) or not raw:
            raise self.fail(f"{key}.when", "expected a mapping of earlier parameter -> value(s)")
        names = {p.name for p in earlier}
        for dep in raw:
            if dep not in names:
                raise self.fail(
                    f"{key}.when.{dep}",
                    "must name a parameter defined above it; "
                    f"defined so far: {', '.join(sorted(names)) or 'none'}",
                )
        return {k: tuple(v) if isinstance(v, list) else (v,) for k, v in raw.items()}

    def check_values(self, param: Param, earlier: list[Param], defaults: Defaults) -> None:
        """Every value a parameter can take must build a valid config under its conditions."""
        key = f"params.{param.name}"
        if param.name == "model":
            for value in param.values or (None,):
                self.member(key, value, list_models())
        elif param.name == "attention":
            for value in param.values or (None,):
                self.member(key, value, list_attentions())
        elif param.name.startswith(ATTN_PREFIX):
            option = param.name[len(ATTN_PREFIX) :]
            self.attention_options(
                key,
                {option: None},
                defaults.model,
                self.possible_attentions(param, earlier, defaults),
            )
        elif param.name in TRAIN_KEYS:
            for value in param.extremes():
                self.train_values(key, {**defaults.train, param.name: value})

    @staticmethod
    def possible_attentions(
        param: Param, earlier: list[Param], defaults: Defaults
    ) -> tuple[str, ...]:
        if "attention" in param.when:
            return param.when["attention"]
        searched = next((p for p in earlier if p.name == "attention"), None)
        return searched.values if searched else (defaults.attention,)
