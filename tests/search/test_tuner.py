import dataclasses
import os

import pytest

from ecab_tune.search.tuner import TUNE_ENV, make_sampler, tune_settings


def test_tunes_snapshot_settings_hold_for_any_entry_point_and_are_put_back(monkeypatch):
    for key in TUNE_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "1")
    with tune_settings(verbose=False):
        assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "5"
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
    assert not any(key in os.environ for key in TUNE_ENV)
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "1"


def test_the_environment_wins_over_the_search_s_defaults(monkeypatch):
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "60")
    with tune_settings(verbose=True):
        assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "60"
    assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "60"


@pytest.mark.parametrize("verbose", [True, False])
def test_a_failing_search_leaves_the_environment_as_it_was(monkeypatch, verbose):
    for key in (*TUNE_ENV, "RAY_AIR_NEW_OUTPUT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError), tune_settings(verbose=verbose):
        raise RuntimeError("the search failed")
    assert not any(key in os.environ for key in (*TUNE_ENV, "RAY_AIR_NEW_OUTPUT"))


def test_multivariate_tpe_models_the_active_parameters_jointly(tmp_path):
    import optuna

    from ecab_tune.search.config import SearchConfig
    from ecab_tune.search.space import load_space

    space = load_space("bridge")
    for multivariate in (False, True):
        cfg = SearchConfig(space="bridge", storage=str(tmp_path), multivariate=multivariate)
        sampler = make_sampler(cfg.resolved(space), space)
        assert isinstance(sampler, optuna.samplers.TPESampler)
        # Optuna keeps these flags private; they decide how it draws the next trial.
        assert sampler._multivariate is multivariate and sampler._group is multivariate


def test_a_resumed_search_runs_this_driver_s_callbacks_not_those_pickled_at_its_start(
    local_ray, tmp_path
):
    # Tune restores the callbacks pickled when a search began; one of an older version of
    # ours (an instance without a newer attribute) crashed a real resume.
    from ray.tune import Callback

    from ecab_tune.search.config import SearchConfig
    from ecab_tune.search.patches import CsvLogger, JsonLogger
    from ecab_tune.search.space import load_space
    from ecab_tune.search.tuner import build_tuner

    class Marker(Callback):
        def __init__(self, name: str):
            self.name = name

    def trial(config, *, spec, data):
        pass

    space = load_space("quick")
    cfg = SearchConfig(space="quick", name="q", storage=str(tmp_path)).resolved(space)
    build_tuner(cfg, space, None, trial, [Marker("at the start")])  # writes tuner.pkl
    resumed = build_tuner(
        dataclasses.replace(cfg, resume=True), space, None, trial, [Marker("this driver")]
    )
    callbacks = resumed._local_tuner.get_run_config().callbacks
    assert [getattr(c, "name", None) for c in callbacks if isinstance(c, Marker)] == ["this driver"]
    assert sum(isinstance(c, (JsonLogger, CsvLogger)) for c in callbacks) == 2
