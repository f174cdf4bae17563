"""What a search-space file may say: its sections as pydantic models.

Each model refuses unknown keys by name and checks what it can see; `SpaceFile` last checks
what spans sections (conditions name earlier parameters, every value builds a config). A
problem below the key pydantic reports is a `KeyedError` naming the rest of the key.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
)

from ecab_tune.config import TrainConfig
from ecab_tune.models import attention_options, list_attentions, list_models
from ecab_tune.search.checks import KeyedError, check_builds, check_option, check_train, member
from ecab_tune.search.objectives import REPORTED, natural_mode

ATTN_PREFIX = "attention."
MODEL_KEYS = ("model", "width", "attention")
# Set by the search itself, never by a space: epochs from the budget, seed per trial.
TRAIN_KEYS = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("epochs", "seed")
)
LOG_TYPES = ("loguniform", "logint")
INT_TYPES = ("int", "logint")

Count = Annotated[int, Strict(), Field(ge=1)]  # YAML's 3, not 3.0 or "3"
Number = Annotated[float, Strict(), AllowInfNan(False)]  # YAML's 0.01 or 1, not "1e-2"


class _Section(BaseModel):
    """A mapping of the file; `null` reads as empty, an unknown key is refused by name."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, raw: Any) -> Any:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise ValueError(f"expected a mapping, got {type(raw).__name__}")
        unknown = sorted(
            (k for k in raw if k not in cls.model_fields and not cls._extra_key(k)), key=str
        )
        if unknown:
            allowed = ", ".join(cls.model_fields)
            raise KeyedError(str(unknown[0]), f"unknown key; allowed: {allowed}")
        return raw

    @classmethod
    def _extra_key(cls, key: Any) -> bool:
        return False


class Defaults(_Section):
    """`attention.KEY: value` fixes an attention option, spelled as a searched one is."""

    model_config = ConfigDict(frozen=True, extra="allow")

    model: str = "resnet20"
    attention: str = "ecab"
    width: float = 1.0
    dataset: str = "fashion-mnist"
    subset: int | None = None
    max_epochs: Count = 10
    num_samples: Count = 16
    searcher: Literal["optuna", "random", "grid"] = "optuna"
    metric: str = "val_acc"
    mode: Literal["max", "min"] = "max"
    train: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def _extra_key(cls, key: Any) -> bool:
        return str(key).startswith(ATTN_PREFIX)

    @model_validator(mode="before")
    @classmethod
    def _natural_mode(cls, raw: Any) -> Any:
        """A metric given without a mode goes its natural way: `metric: val_loss` alone was
        maximised (the mode's default)."""
        if isinstance(raw, dict) and "mode" not in raw and isinstance(raw.get("metric"), str):
            return {**raw, "mode": natural_mode(raw["metric"])}
        return raw

    @property
    def attention_options(self) -> dict[str, Any]:
        return {k[len(ATTN_PREFIX) :]: v for k, v in (self.model_extra or {}).items()}

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        return member(value, list_models())

    @field_validator("attention")
    @classmethod
    def _known_attention(cls, value: str) -> str:
        return member(value, list_attentions())

    @field_validator("metric")
    @classmethod
    def _reported_metric(cls, value: str) -> str:
        return member(value, REPORTED)

    @field_validator("train")
    @classmethod
    def _recipe_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(TRAIN_KEYS), key=str)
        if unknown:
            raise KeyedError(str(unknown[0]), f"unknown key; allowed: {', '.join(TRAIN_KEYS)}")
        return value

    @model_validator(mode="after")
    def _fixed_choices_build(self) -> Defaults:
        for option in self.attention_options:
            check_option(f"{ATTN_PREFIX}{option}", option, self.attention)
        try:
            check_train(self.train, self.max_epochs)
        except ValueError as exc:
            raise KeyedError("train", str(exc)) from exc
        return self


class SchedulerSettings(_Section):
    grace_period: Count = 1
    reduction_factor: Annotated[Number, Field(gt=1)] = 3.0


class ParamSpec(_Section):
    """One entry of `params:`, as the file states it."""

    type: Literal["uniform", "loguniform", "int", "logint", "choice"]
    low: Number | None = None
    high: Number | None = None
    values: tuple[Any, ...] = ()
    when: dict[str, tuple[Any, ...]] = Field(default_factory=dict)

    @field_validator("when", mode="before")
    @classmethod
    def _conditions(cls, raw: Any) -> Any:
        if raw is None:
            return {}
        if not isinstance(raw, dict) or not raw:
            raise ValueError("expected a mapping of earlier parameter -> value(s)")
        conditions = {k: tuple(v) if isinstance(v, list | tuple) else (v,) for k, v in raw.items()}
        for dep, values in conditions.items():
            if not values:  # no value meets it: the parameter would silently never be drawn
                raise KeyedError(str(dep), "lists no value; list the values that draw it")
        return conditions

    @model_validator(mode="after")
    def _drawable(self) -> ParamSpec:
        if self.type == "choice":
            if not self.values:
                raise KeyedError("values", "a choice needs a non-empty list of values")
            if len(set(map(repr, self.values))) != len(self.values):
                raise KeyedError("values", f"duplicate values in {list(self.values)}")
            # What Optuna stores; a list drew with a warning, and the report failed on it.
            for value in self.values:
                if value is not None and not isinstance(value, str | int | float):
                    raise KeyedError(
                        "values",
                        f"{value!r} is no single value; a choice takes strings, numbers, "
                        "true/false or null",
                    )
            return self
        for which in ("low", "high"):
            if getattr(self, which) is None:
                raise KeyedError(which, "expected a finite number, got None")
        low, high = float(self.low), float(self.high)  # type: ignore[arg-type]
        if low >= high:
            raise ValueError(f"low ({low}) must be < high ({high})")
        if self.type in LOG_TYPES and low <= 0:
            raise KeyedError("low", f"a log range must stay above 0, got {low}")
        if self.type in INT_TYPES and not (low.is_integer() and high.is_integer()):
            raise ValueError("an int range needs integer bounds")
        return self

    def extremes(self) -> tuple[Any, ...]:
        """The values a draw can take at either end, of the type it takes them in."""
        if self.type == "choice":
            return self.values
        if self.type in INT_TYPES:
            return (int(self.low), int(self.high))  # type: ignore[arg-type]
        return (self.low, self.high)

    def contains(self, value: Any) -> bool:
        """Whether a draw could give `value` (a `when`'s, a trial of an earlier search)."""
        if self.type == "choice":
            return value in self.values
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        if self.type in INT_TYPES and value != int(value):
            return False
        return float(self.low) <= value <= float(self.high)  # type: ignore[arg-type]

    def describe(self) -> str:
        if self.type == "choice":
            return ", ".join(map(repr, self.values))
        return f"values in [{self.low}, {self.high}]"


class SpaceFile(_Section):
    """The whole file; checks that span sections (conditions, values per parameter) last."""

    description: str = ""
    defaults: Defaults = Field(default_factory=Defaults)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    params: dict[str, ParamSpec] = Field(default=None, validate_default=True)

    @field_validator("params", mode="before")
    @classmethod
    def _known_params(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or not raw:
            raise ValueError("expected a non-empty mapping of parameter name -> spec")
        for name in raw:
            if name not in (*MODEL_KEYS, *TRAIN_KEYS) and not str(name).startswith(ATTN_PREFIX):
                raise KeyedError(
                    str(name),
                    "unknown parameter; allowed: "
                    f"{', '.join((*MODEL_KEYS, *TRAIN_KEYS))} or attention.<option>",
                )
        return raw

    @model_validator(mode="after")
    def _every_value_builds(self) -> SpaceFile:
        """Conditions name earlier parameters, and every value a parameter can take builds a
        valid config under its conditions."""
        earlier: dict[str, ParamSpec] = {}
        for name, param in self.params.items():
            key = f"params.{name}"
            for dep, values in param.when.items():
                if dep not in earlier:
                    raise KeyedError(
                        f"{key}.when.{dep}",
                        "must name a parameter defined above it; "
                        f"defined so far: {', '.join(sorted(earlier)) or 'none'}",
                    )
                # A value the parameter never takes would silently switch this one off.
                never = [v for v in values if not earlier[dep].contains(v)]
                if never:
                    raise KeyedError(
                        f"{key}.when.{dep}",
                        f"{dep} never takes {never[0]!r}; it takes {earlier[dep].describe()}",
                    )
            self._check_values(key, name, param, earlier)
            earlier[name] = param
        self._check_recipe_pairs()
        # The fixed options suit every attention that takes options (`resolve` drops them for
        # one that takes none), and the fixed model builds under each.
        for attention in self._attentions():
            if attention_options(attention):
                for option in self.defaults.attention_options:
                    check_option(f"defaults.{ATTN_PREFIX}{option}", option, attention)
            self._check_model("defaults", attention, {})
        return self

    def _check_values(
        self, key: str, name: str, param: ParamSpec, earlier: dict[str, ParamSpec]
    ) -> None:
        d = self.defaults
        try:
            if name == "model":
                for value in param.values or (None,):
                    member(value, list_models())
            elif name == "attention":
                for value in param.values or (None,):
                    member(value, list_attentions())
            elif name in TRAIN_KEYS:
                for draw in self._recipe_draws(name):
                    check_train({**d.train, **draw}, d.max_epochs)
        except ValueError as exc:
            raise KeyedError(key, str(exc)) from exc
        if name.startswith(ATTN_PREFIX):
            # Under a searched attention, the option must suit every choice its `when` allows.
            option = name[len(ATTN_PREFIX) :]
            for attention in self._attentions(param):
                check_option(key, option, attention)
            # Each value builds, on its own, under the options its conditions fix.
            fixed = {
                dep[len(ATTN_PREFIX) :]: values[0]
                for dep, values in param.when.items()
                if dep.startswith(ATTN_PREFIX)
            }
            for value in param.extremes():
                for attention in self._attentions(param):
                    self._check_model(key, attention, {**fixed, option: value})

    def _check_recipe_pairs(self) -> None:
        """Recipe values fine alone can clash in a trial (`compile` with `cuda_graphs`, `nesterov`
        at momentum 0): each pair of searched recipe parameters builds a TrainConfig wherever
        they can be drawn together. TrainConfig's checks involve two fields at most."""
        train = [n for n in self.params if n in TRAIN_KEYS]
        for first, second in itertools.combinations(train, 2):
            for draw in self._recipe_draws(first, second):
                try:
                    check_train({**self.defaults.train, **draw}, self.defaults.max_epochs)
                except ValueError as exc:
                    raise KeyedError(
                        f"params.{second}",
                        f"{second}={draw[second]!r} with {first}={draw[first]!r}: {exc}",
                    ) from exc

    def _recipe_draws(self, *names: str) -> Iterator[dict[str, Any]]:
        """The recipe values `names` can take in one trial: each at its extremes, except that
        every parameter their `when`s (and those parameters' `when`s) name is held at the values
        the conditions allow; conditions no value meets, none."""
        held: dict[str, list[Any]] = {}
        todo, seen = list(names), set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for dep, values in self.params[name].when.items():
                held[dep] = [v for v in held.get(dep, values) if v in values]
                todo.append(dep)
        allowed = {n: list(self.params[n].extremes()) for n in names} | held
        recipe = [n for n in allowed if n in TRAIN_KEYS]
        for combo in itertools.product(*(allowed[n] for n in allowed)):
            draw = dict(zip(allowed, combo, strict=True))
            yield {n: draw[n] for n in recipe}

    def _attentions(self, param: ParamSpec | None = None) -> tuple[str, ...]:
        """The attentions a parameter can meet: its `when`'s, else every searched one."""
        if param is not None and "attention" in param.when:
            return param.when["attention"]
        searched = self.params.get("attention")
        return searched.values if searched else (self.defaults.attention,)

    def _check_model(self, key: str, attention: str, options: dict[str, Any]) -> None:
        """Every model and width the space can draw builds with `attention` and `options`
        (on top of the fixed ones, which an attention without options ignores)."""
        model, width = self.params.get("model"), self.params.get("width")
        models = model.values if model else (self.defaults.model,)
        widths = width.extremes() if width else (self.defaults.width,)
        if attention_options(attention):
            options = {**self.defaults.attention_options, **options}
        else:
            options = {}
        for name in models:
            for value in widths:
                try:
                    check_builds(name, attention, options, value)
                except ValueError as exc:
                    raise KeyedError(key, f"{options or ''} {exc}".strip()) from exc
