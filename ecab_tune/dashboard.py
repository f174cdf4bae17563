"""`python -m ecab_tune.dashboard runs/<name>`: optuna-dashboard on an experiment's study.

Finds the study the search keeps in `runs/<name>/optuna.db` and serves it (optimisation history,
every trial's learning curve, importances, parallel coordinates), live while the search runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ecab_tune.cluster import netloc
from ecab_tune.config import command_parser
from ecab_tune.experiment import OPTUNA_DB, optuna_storage


class NotAnExperimentError(ValueError):
    """A folder the search did not write; the message names it and what was expected."""


def study_storage(experiment: Path) -> tuple[str, str]:
    """The study's storage URL and name (the search names the study after its folder)."""
    try:
        storage = optuna_storage(experiment)
    except ValueError as exc:
        raise NotAnExperimentError(str(exc)) from exc
    import optuna

    db = experiment / OPTUNA_DB
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if not names:
        raise NotAnExperimentError(f"{db} holds no study yet: has the search started?")
    name = experiment.resolve().name
    if name in names:
        return storage, name
    if len(names) == 1:  # a renamed folder keeps its study's first name
        return storage, names[0]
    raise NotAnExperimentError(f"{db} holds several studies ({', '.join(names)}), none {name!r}")


def study_url(storage: str, name: str, host: str, port: int) -> str:
    import optuna

    study_id = optuna.storages.RDBStorage(storage).get_study_id_from_name(name)
    return f"http://{netloc(host, port)}/dashboard/studies/{study_id}"


def port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1-65535)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "python -m ecab_tune.dashboard", __doc__, "python -m ecab_tune.dashboard runs/quickstart"
    )
    parser.add_argument("experiment", type=Path, help="the experiment folder: runs/<name>")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=port, default=8080, help="port to listen on")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        storage, name = study_storage(args.experiment)
    except NotAnExperimentError as exc:
        parser.error(str(exc))
    from optuna_dashboard import run_server

    url = study_url(storage, name, args.host, args.port)
    print(f"[dashboard] study {name!r} of {args.experiment}: {url}  (Ctrl-C stops)", flush=True)
    try:
        run_server(storage, host=args.host, port=args.port)
    except OSError as exc:
        parser.error(f"cannot listen on {netloc(args.host, args.port)} ({exc}); try another --port")
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
