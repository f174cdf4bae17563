"""What one search is: `SearchConfig`, validated where it is built, resolved against its space,
and read back from the experiment folder by `--resume`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ecab_tune.cluster import check_resources
from ecab_tune.config import (
    DATA_LOCATION,
    SEEDS,
    DataConfig,
    from_dict,
    option_help,
    out_folder,
    to_dict,
)
from ecab_tune.experiment import SEARCH_FILE
from ecab_tune.search.objectives import Objective, parse_objectives
from ecab_tune.search.space import SearchSpace


@dataclass(frozen=True)
class SearchConfig:
    """One search; None means "the space file's default"."""

    space: str = field(default="bridge", metadata=option_help("built-in space name or a YAML path"))
    name: str | None = field(
        default=None, metadata=option_help("experiment name (default: space-time)")
    )
    storage: str = field(
        default="runs", metadata=option_help("experiments folder (shared on a cluster)")
    )
    # The data trials train and are scored on; None: the space's dataset and subset.
    data: DataConfig | None = None
    num_samples: int | None = field(default=None, metadata=option_help("number of trials"))
    max_epochs: int | None = field(
        default=None, metadata=option_help("epochs of a full-budget trial")
    )
    cpus_per_trial: float = field(default=1.0, metadata=option_help("CPUs reserved per trial"))
    gpus_per_trial: float = field(
        default=0.0,
        metadata=option_help("GPUs per trial; fractions share a GPU (0.25: four trials)"),
    )
    max_concurrent: int | None = field(
        default=None, metadata=option_help("cap on concurrent trials")
    )
    scheduler: Literal["asha", "fifo"] = field(
        default="asha",
        metadata=option_help("asha stops poor trials early; fifo runs all to the end"),
    )
    searcher: Literal["optuna", "random", "grid"] | None = field(
        default=None, metadata=option_help("optuna (TPE), random, or grid (choice-only spaces)")
    )
    multivariate: bool = field(
        default=False,
        metadata=option_help(
            "TPE models the parameters jointly (grouped by which are active), not one by one"
        ),
    )
    seed: int = field(default=0, metadata=option_help("seed of the sampler and of every trial"))
    address: str | None = field(
        default=None,
        metadata=option_help("omit: embedded local Ray; 'auto' or ray://host:10001: join"),
    )
    resume: bool = field(default=False, metadata=option_help("continue the experiment --name"))
    dashboard: bool = field(
        default=True, metadata=option_help("start the Ray dashboard (embedded Ray)")
    )
    stopped_trials: Literal["pruned", "complete"] = field(
        default="pruned",
        metadata=option_help(
            "how ASHA-stopped trials reach Optuna: pruned (budget-aware) or complete"
        ),
    )
    progress_every: float = field(
        default=30.0, metadata=option_help("seconds between status lines while the search runs")
    )
    verbose: bool = field(
        default=False,
        metadata=option_help("also print Ray Tune's own trial tables and result boxes"),
    )
    export_partial: bool = field(
        default=False,
        metadata=option_help(
            "on Ctrl-C/SIGTERM, still export the best trial so far (marked partial)"
        ),
    )
    objectives: str | None = field(
        default=None,
        metadata=option_help(
            "METRIC:max|min,... over reported metrics, e.g. val_acc:max,macs:min; the first "
            "drives ASHA and best/, two or more export the Pareto set (default: the space's metric)"
        ),
    )
    warm_start: str | None = field(
        default=None,
        metadata=option_help("an earlier experiment folder whose fitting trials seed this study"),
    )
    snapshot: str | None = field(
        default=None,
        metadata=option_help(
            "keep a copy of the search's state here, small enough to commit, written when it "
            "stops; with --resume where the experiment folder is missing, continue from it"
        ),
    )
    tracker: Literal["none", "tensorboard", "mlflow"] = field(
        default="none",
        metadata=option_help(
            "also log every trial to TensorBoard or MLflow, inside the experiment"
        ),
    )

    def __post_init__(self) -> None:
        for key in ("num_samples", "max_epochs", "max_concurrent"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"--{key.replace('_', '-')}={value} must be >= 1")
        if self.data is not None and not self.data.val_fraction > 0.0:
            # Without a validation split the trainer would score on test: ASHA and Optuna would
            # select on it and the export would call a test score val_acc.
            raise ValueError(
                f"--val-fraction={self.data.val_fraction} must be in (0, 1): a search selects "
                "on a validation split, never on test"
            )
        if not self.progress_every > 0:
            raise ValueError(f"--progress-every={self.progress_every} must be > 0")
        check_resources(self.cpus_per_trial, self.gpus_per_trial)
        if self.resume and not self.name:
            raise ValueError("--resume needs --name of the experiment to continue")
        if self.name is not None and (self.name in ("", ".", "..") or "/" in self.name):
            raise ValueError(f"--name={self.name!r} must be a plain folder name")
        if not 0 <= self.seed < SEEDS:  # numpy's limit: it failed once the data had loaded
            raise ValueError(f"--seed={self.seed} must be in [0, 2**32)")
        if self.objectives is not None:
            parse_objectives(self.objectives)
        self._check_folders()

    def _check_folders(self) -> None:
        """--storage and --snapshot can be made: one under a file failed only at its first
        write, --storage once the data had loaded and Ray had started, --snapshot at the end."""
        for key in ("storage", "snapshot"):
            value = getattr(self, key)
            if value is None:
                continue
            try:
                out_folder(value)
            except argparse.ArgumentTypeError as exc:
                raise ValueError(f"--{key} {exc}") from exc

    def resolved(self, space: SearchSpace) -> SearchConfig:
        """Fill every None from the space's defaults, so the run is fully specified."""
        d = space.defaults
        space.check_budget(self.max_epochs or d.max_epochs)
        return dataclasses.replace(
            self,
            name=self.name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            data=self.data or space_data(space),
            num_samples=self.num_samples or d.num_samples,
            max_epochs=self.max_epochs or d.max_epochs,
            searcher=self.searcher or d.searcher,
            objectives=self.objectives or f"{d.metric}:{d.mode}",
        )

    @property
    def objective_list(self) -> tuple[Objective, ...]:
        """The objectives, first the one ASHA and best/ go by (a resolved config's)."""
        return parse_objectives(str(self.objectives))

    @property
    def primary(self) -> Objective:
        return self.objective_list[0]

    @property
    def experiment_dir(self) -> Path:
        return Path(self.storage).resolve() / str(self.name)


def space_data(space: SearchSpace, **given: Any) -> DataConfig:
    """The space's dataset and subset, under the DataConfig fields `given`."""
    d = space.defaults
    return DataConfig(**{"dataset": d.dataset, "subset": d.subset, **given})


# What a resumed search takes from the command line; everything else is the search's own
# (its output settings too: progress interval and verbosity).
# `max_concurrent` is the search's own: Tune restores its concurrency limiter's state, which a
# limit set only on resume would lack (it would drop the results of the trials it resumes).
RUNTIME_KEYS = (
    "name", "storage", "resume", "address", "dashboard", "cpus_per_trial", "gpus_per_trial",
    "export_partial", "snapshot",
)  # fmt: skip


def stored_config(cfg: SearchConfig, given: Mapping[str, Any] | None = None) -> SearchConfig:
    """For --resume: the config the search started with, with this run's runtime flags (a
    search begun before search.json existed takes the command line's, as it did then).

    `given`: the other flags typed, by field (SearchConfig's or DataConfig's), whatever their
    values. Where the data lies may change (another machine); any other that contradicts the
    search's is refused, even at its default: it would have been silently ignored."""
    path = cfg.experiment_dir / SEARCH_FILE
    if not path.exists():
        return cfg
    given = given or {}
    try:
        stored = read_search_file(path)
        names = {f.name for f in dataclasses.fields(SearchConfig)}
        kept = {k: v for k, v in stored.items() if k in names and k not in RUNTIME_KEYS}
        if isinstance(kept.get("data"), dict):
            data = from_dict(DataConfig, kept["data"], where=str(path))
            moved = {k: given[k] for k in DATA_LOCATION if k in given}
            kept["data"] = dataclasses.replace(data, **moved)
        resumed = dataclasses.replace(cfg, **kept)
    except (OSError, TypeError, KeyError, ValueError) as exc:  # JSONDecodeError included
        raise ValueError(f"--resume: cannot use {path} ({exc})") from exc
    for key, value in given.items():
        if key not in (*RUNTIME_KEYS, *DATA_LOCATION):
            _check_unchanged(resumed, key, value)
    return resumed


def read_search_file(path: Path) -> dict[str, Any]:
    """A search.json's settings; OSError or ValueError (JSONDecodeError included) if damaged."""
    stored = json.loads(path.read_text())
    if not isinstance(stored, dict):
        raise ValueError(f"expected a JSON object, got {type(stored).__name__}")
    return stored


def _check_unchanged(resumed: SearchConfig, key: str, value: Any) -> None:
    """A flag given on --resume must say what the search already is."""
    holder = resumed.data if key in {f.name for f in dataclasses.fields(DataConfig)} else resumed
    if holder is None:  # a search older than search.json's data: nothing recorded to contradict
        return
    saved = getattr(holder, key)
    if key == "space":  # recorded as a built-in's name or a YAML file's absolute path
        same = space_name(value) == saved
    elif key == "objectives" and value is not None and saved is not None:
        same = parse_objectives(value) == parse_objectives(saved)  # spacing aside
    else:
        same = value == saved
    if not same:
        raise ValueError(
            f"--resume continues {resumed.experiment_dir} as it started: "
            f"--{key.replace('_', '-')} {value} contradicts its {saved} (leave the flag out)"
        )


def space_name(space: str) -> str:
    """How search.json names a space: a built-in's name, or a YAML file's absolute path (a
    resume may start in another folder)."""
    return str(Path(space).resolve()) if Path(space).suffix in (".yaml", ".yml") else space


def search_record(cfg: SearchConfig) -> dict[str, Any]:
    """What `search.json` keeps: the config, its space named by `space_name`."""
    return {**to_dict(cfg), "space": space_name(cfg.space)}


def resume_command(cfg: SearchConfig) -> str:
    default_storage = SearchConfig.__dataclass_fields__["storage"].default
    words = ["python", "-m", "ecab_tune.search", "--name", str(cfg.name)]
    if cfg.storage != default_storage:
        words += ["--storage", cfg.storage]
    if cfg.snapshot is not None:
        words += ["--snapshot", cfg.snapshot]
    return shlex.join([*words, "--resume"])
