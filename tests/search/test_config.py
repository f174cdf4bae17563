import json

from ecab_tune.config import DataConfig, to_dict
from ecab_tune.search import SearchConfig, load_space
from ecab_tune.search.config import resume_command
from ecab_tune.search.objectives import Objective
from ecab_tune.search.runner import prepare


def test_objectives_parse_in_order_and_the_first_leads():
    cfg = SearchConfig(objectives="val_acc:max, macs:min,latency_ms:min")
    assert cfg.objective_list == (
        Objective("val_acc", "max"),
        Objective("macs", "min"),
        Objective("latency_ms", "min"),
    )
    assert cfg.primary == Objective("val_acc", "max")


def test_the_space_metric_is_the_default_objective():
    cfg = SearchConfig(space="quick").resolved(load_space("quick"))
    assert cfg.objectives == "val_acc:max" and len(cfg.objective_list) == 1


def test_the_resume_command_names_storage_only_when_it_is_not_the_default():
    assert resume_command(SearchConfig(name="q")) == "python -m ecab_tune.search --name q --resume"
    assert resume_command(SearchConfig(name="q", storage="/data/my runs")) == (
        "python -m ecab_tune.search --name q --storage '/data/my runs' --resume"
    )


def test_resume_takes_the_search_from_its_folder_and_runtime_flags_from_the_command(tmp_path):
    started = SearchConfig(
        space="quick", name="q", storage=str(tmp_path), data=DataConfig(subset=600), seed=3
    )
    exp = tmp_path / "q"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"")
    (exp / "search.json").write_text(json.dumps({**to_dict(started), "max_epochs": 2}))
    cfg, space = prepare(
        SearchConfig(name="q", storage=str(tmp_path), resume=True, export_partial=True, seed=9)
    )
    assert space.name == "quick" and (cfg.data.subset, cfg.seed, cfg.max_epochs) == (600, 3, 2)
    assert cfg.export_partial and cfg.resume
