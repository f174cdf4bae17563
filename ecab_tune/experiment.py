"""The experiment folder of a search: its file names, the one reader of a trial's results, and
the one vocabulary of trial statuses. Shared by the search, the report and the service.

runs/<name>/
  trial_<id>/params.json   the sampled parameters (Ray Tune's own)
  trial_<id>/result.json   one JSON line per reported epoch (Ray Tune's own)
  trial_<id>/error.txt     the last error of a trial that raised (Ray Tune's own)
  optuna.db                the Optuna study (SQLite)
  search.json              the resolved search config, written when it starts (--resume)
  summary.json             written when the search ends or is interrupted: every trial
  best/                    the exported best checkpoint, with a copy of the space file,
                           config.json and a README.md model card
  pareto/<k>/              with several --objectives: each Pareto-optimal trial, exported as best/
  mlflow.db, mlflow/       with --tracker mlflow: MLflow's store (SQLite) and artifact folder

A trial that has ended is `finished` (ran its full budget), `stopped early` (the scheduler
stopped it), `diverged` (NaN loss) or `errored` (raised, and its retries ran out). A search
that was interrupted leaves the trials that had done an epoch `interrupted` and the others
`pending`; `--resume` continues both. `running` is only ever said of a search still going.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPORT_DIR = "best"
OPTUNA_DB = "optuna.db"
_SQLITE = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database
TRIAL_PREFIX = "trial_"  # trial folders: trial_<id>
RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"  # the trial's sampled parameters (Ray Tune's own)
ERROR_FILE = "error.txt"  # ray.tune.result.EXPR_ERROR_FILE, without importing Ray
SUMMARY_FILE = "summary.json"
PARETO_DIR = "pareto"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlflow"
SEARCH_FILE = "search.json"
SPACE_COPY = "search_space.yaml"  # the space file as the search began (its folder, best/)

FINISHED = "finished"
STOPPED = "stopped early"
DIVERGED = "diverged"
ERRORED = "errored"
INTERRUPTED = "interrupted"
PENDING = "pending"
RUNNING = "running"

ENDED = (FINISHED, STOPPED, DIVERGED, ERRORED)
STATUSES = (*ENDED, INTERRUPTED, PENDING, RUNNING)


# ---------------------------------------------------------------- trial folders and results
def trial_folders(exp_dir: Path) -> list[Path]:
    """The experiment's `trial_<id>` folders, in name order."""
    return sorted(p for p in Path(exp_dir).glob(f"{TRIAL_PREFIX}*") if p.is_dir())


@dataclass(frozen=True)
class TrialResults:
    rows: list[dict[str, Any]]  # every reported result, in the order Ray wrote them
    unreadable: int  # lines that did not parse: one cut short by a killed driver, say


def read_results(trial_folder: Path) -> TrialResults:
    """The results a trial reported (`result.json`); none while the file does not exist yet."""
    try:
        lines = (Path(trial_folder) / RESULT_FILE).read_text().splitlines()
    except OSError:
        return TrialResults([], 0)
    rows, unreadable = [], 0
    for line in filter(str.strip, lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            unreadable += 1
    return TrialResults(rows, unreadable)


# ---------------------------------------------------------------- statuses
def ended_status(epochs: int, max_epochs: int, *, diverged: bool = False) -> str:
    """How a trial that returned (or was stopped) ended: by its last result."""
    if diverged:
        return DIVERGED
    return FINISHED if epochs >= max_epochs else STOPPED


def tune_status(
    state: str, epochs: int, max_epochs: int, *, diverged: bool, search_ended: bool
) -> str:
    """A Ray Tune trial state (PENDING, RUNNING, PAUSED, TERMINATED, ERROR) in our words."""
    if state == "ERROR":
        return ERRORED
    if state == "TERMINATED":
        return ended_status(epochs, max_epochs, diverged=diverged)
    if state == "PENDING" and epochs == 0:
        return PENDING
    # Started (or restarted after a crash) and not ended.
    return INTERRUPTED if search_ended else RUNNING


def optuna_storage(experiment: Path) -> str:
    """The storage URL of the experiment's Optuna study, for a reader (the dashboard, a warm
    start): refuses a folder without one, and a file that is no SQLite database, before Optuna
    would fail on it or write its empty schema into it."""
    db = experiment / OPTUNA_DB
    if not db.is_file():
        what = "does not exist" if not experiment.exists() else f"holds no {OPTUNA_DB}"
        raise ValueError(
            f"{experiment} {what}: not an experiment folder of ecab_tune.search "
            f"(expected <storage>/<name>/{OPTUNA_DB}, e.g. runs/quickstart)"
        )
    try:
        with db.open("rb") as f:
            header = f.read(len(_SQLITE))
        if header == _SQLITE:
            # A damaged file keeps its header: reading the schema finds it, read-only.
            uri = f"{db.resolve().as_uri()}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as con:
                con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except (OSError, sqlite3.Error) as exc:
        raise ValueError(f"{db} cannot be read: {exc}") from None
    if header != _SQLITE:
        raise ValueError(f"{db} is {'empty' if not header else 'not an SQLite database'}")
    return f"sqlite:///{db.resolve()}"
