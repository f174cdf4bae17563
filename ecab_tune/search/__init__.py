"""The hyperparameter search: Ray Tune trials, an Optuna searcher and ASHA over a YAML space.

`python -m ecab_tune.search` is the CLI (`__main__`); from Python:

    outcome = run_search(SearchConfig(space="quick"))

config (what one search is), space + schema (the YAML space), tuner (the Tune configuration),
trainable (one trial), patches (corrections to Ray's Optuna searcher and ASHA), runner (a
search from start to exports), results (the trial table), export (best/ and pareto/),
snapshot (the state that moves to another machine), and objectives, pareto, warm_start,
progress.
"""

from ecab_tune.search.config import SearchConfig
from ecab_tune.search.runner import Outcome, run_search
from ecab_tune.search.space import SearchSpace, SpaceError, load_space

__all__ = ["Outcome", "SearchConfig", "SearchSpace", "SpaceError", "load_space", "run_search"]
