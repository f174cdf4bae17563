"""Search spaces as YAML files: loaded, validated once, then sampled define-by-run.

A space file has four sections:

    description: one line
    defaults:    model, attention, dataset, budget, fixed recipe (`train`, `attention.KEY`)
    scheduler:   ASHA settings (grace_period, reduction_factor)
    params:      name -> {type, low/high | values, when}

Parameter names are TrainConfig fields (`lr`, `batch_size`, ...), `model`, `width`, `attention`
or `attention.<option>` (an option of the attention module). `when: {name: value-or-list}`
samples a parameter only when an earlier one took one of those values (Optuna define-by-run).

The file's schema is `schema.py`; its first error becomes one `SpaceError` line naming the
file, the key and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ecab_tune.config import TrainConfig
from ecab_tune.models import ModelConfig, attention_options
from ecab_tune.search.checks import KeyedError, check_train
from ecab_tune.search.schema import (
    ATTN_PREFIX,
    INT_TYPES,
    LOG_TYPES,
    TRAIN_KEYS,
    Defaults,
    ParamSpec,
    SchedulerSettings,
    SpaceFile,
)

SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"  # the repository's


class SpaceError(ValueError):
    """A search-space file that does not validate; the message names file, key and remedy."""


class Param(ParamSpec):
    """A parameter of a loaded space: its spec under its name."""

    name: str

    def active(self, chosen: dict[str, Any]) -> bool:
        return all(chosen.get(k) in allowed for k, allowed in self.when.items())

    def suggest(self, trial: Any) -> Any:
        """Draw from an `optuna.Trial` (or Ray's capturing proxy of one)."""
        if self.type == "choice":
            return trial.suggest_categorical(self.name, list(self.values))
        if self.type in INT_TYPES:
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), log=self.type in LOG_TYPES
            )
        return trial.suggest_float(self.name, self.low, self.high, log=self.type in LOG_TYPES)

    def distribution(self) -> Any:
        """The Optuna distribution `suggest` draws from."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.type == "choice":
            return CategoricalDistribution(self.values)
        if self.type in INT_TYPES:
            return IntDistribution(int(self.low), int(self.high), log=self.type in LOG_TYPES)
        return FloatDistribution(self.low, self.high, log=self.type in LOG_TYPES)


def _space_error(path: Path, exc: ValidationError) -> SpaceError:
    """The first error of `exc` as one line: file, dotted key, problem."""
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    keys = [str(part) for part in error["loc"]]
    if isinstance(cause, KeyedError):
        keys.append(cause.key)
    value = error.get("input")
    if isinstance(cause, ValueError):
        problem = str(cause)
    elif error["type"] == "literal_error":
        problem = f"{value!r} is not allowed; allowed: {error['ctx']['expected']}"
    elif error["type"] in ("float_type", "finite_number"):
        problem = f"expected a finite number, got {value!r}"
    else:
        problem = f"{error['msg'][0].lower()}{error['msg'][1:]}, got {value!r}"
    return SpaceError(f"{path}: {'.'.join(keys) + ': ' if keys else ''}{problem}")


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
            **{ATTN_PREFIX + k: v for k, v in d.attention_options.items()},
            **d.train,
        }

    def check_budget(self, max_epochs: int) -> None:
        """The recipe fits a budget other than the file's own (`--max-epochs`)."""
        train = self.defaults.train
        checks = [("defaults.train", train)] + [
            (f"params.{p.name}", {**train, p.name: value})
            for p in self.params
            if p.name in TRAIN_KEYS
            for value in p.extremes()
        ]
        for key, values in checks:
            try:
                check_train(values, max_epochs)
            except ValueError as exc:
                raise SpaceError(
                    f"{self.path}: {key}: {exc} (at --max-epochs {max_epochs})"
                ) from exc

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
        if not attention_options(chosen["attention"]):
            attention_kwargs = {}  # an attention without options ignores the space's fixed ones
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
        text = path.read_text(encoding="utf-8")
        # An alias repeats what it names: a few hundred bytes of nested ones are millions of
        # values to validate (a 457-byte file grew a search to 2 GB). A space needs none.
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, yaml.SafeLoader)):
            raise SpaceError(f"{path}: YAML aliases (*name) are not allowed in a space file")
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpaceError(f"{path}: not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SpaceError(f"{path}: cannot read it: {exc}") from exc
    try:
        file = SpaceFile.model_validate(raw)
    except ValidationError as exc:
        raise _space_error(path, exc) from exc
    # Validated already, as the file's entries: named here without validating twice.
    params = tuple(Param.model_construct(name=n, **dict(spec)) for n, spec in file.params.items())
    return SearchSpace(path.stem, path, file.description, file.defaults, file.scheduler, params)
