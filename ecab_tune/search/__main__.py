"""`python -m ecab_tune.search`: Ray Tune + Optuna (TPE) + ASHA over a YAML search space.

Runs on an embedded local Ray (laptop) or joins a cluster (`--address`). At the end it prints
the best trials and exports the best one as a self-contained checkpoint (`<storage>/<name>/best`)
that `python -m serve` loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ecab_tune.cluster import ClusterJoinError
from ecab_tune.config import DataConfig, add_arguments, command_parser, from_args, given_flags
from ecab_tune.data import DatasetNotFoundError
from ecab_tune.search.config import SearchConfig, space_data
from ecab_tune.search.runner import run_search
from ecab_tune.search.space import SpaceError, load_space

SPACE_DATA = ("dataset", "subset")  # left out on the command line: the space's


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "python -m ecab_tune.search",
        __doc__,
        "python -m ecab_tune.search --space quick",
        "python -m ecab_tune.search --space bridge --address auto --gpus-per-trial 0.25",
        note="--dataset and --subset default to the space's; --val-fraction must be above 0 "
        "(a search selects on a validation split, never on test).",
    )
    add_arguments(parser, SearchConfig, skip=("data",))
    add_arguments(parser, DataConfig)
    parser.set_defaults(**dict.fromkeys(SPACE_DATA))
    return parser


def search_config(args: argparse.Namespace) -> SearchConfig:
    """The search the flags describe; its data is the space's under the data flags given."""
    cfg = from_args(SearchConfig, args)
    if cfg.resume:
        return cfg  # a resumed search keeps the data it started with (search.json)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(DataConfig)}
    given = {k: v for k, v in given.items() if v is not None or k not in SPACE_DATA}
    return dataclasses.replace(cfg, data=space_data(load_space(cfg.space), **given))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    # A resumed search is the one in its folder: the flags typed are checked against it.
    given = {k: getattr(args, k) for k in given_flags(parser, argv)} if args.resume else None
    try:
        outcome = run_search(search_config(args), given=given)
    except ClusterJoinError as exc:  # one line, without the usage a flag error gets
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, SpaceError, DatasetNotFoundError) as exc:
        parser.error(str(exc))
    if outcome.last_word is not None:
        import ray

        ray.shutdown()
        print(outcome.last_word, flush=True)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
