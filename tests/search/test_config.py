import dataclasses
import json
import re

import pytest

from ecab_tune.config import DataConfig, to_dict
from ecab_tune.search import SearchConfig, load_space
from ecab_tune.search.config import resume_command, search_record, stored_config
from ecab_tune.search.objectives import Objective
from ecab_tune.search.runner import prepare
from ecab_tune.search.space import SPACES_DIR


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
    (exp / "summary.json").write_text('{"interrupted": true}')  # the stop's
    cfg, space = prepare(
        SearchConfig(name="q", storage=str(tmp_path), resume=True, export_partial=True, seed=9)
    )
    assert space.name == "quick" and (cfg.data.subset, cfg.seed, cfg.max_epochs) == (600, 3, 2)
    assert cfg.export_partial and cfg.resume
    # Running again, the search is no longer interrupted: its report reads the trials' files.
    assert not (exp / "summary.json").exists()


def _started(tmp_path, **kwargs):
    """A search folder as a stopped search leaves it: Ray's marker and search.json."""
    started = SearchConfig(space="quick", name="q", storage=str(tmp_path), **kwargs)
    exp = tmp_path / "q"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"")
    (exp / "search.json").write_text(
        json.dumps(search_record(started.resolved(load_space("quick"))))
    )
    return SearchConfig(name="q", storage=str(tmp_path), resume=True)


def test_flags_given_on_resume_must_say_what_the_search_is_but_its_data_may_move(tmp_path):
    resumed = _started(
        tmp_path, data=DataConfig(subset=600), seed=3, objectives="val_acc:max,macs:min"
    )
    agreeing = {"space": "quick", "seed": 3, "subset": 600, "objectives": "val_acc:max, macs:min"}
    cfg = stored_config(resumed, {**agreeing, "data_dir": "/elsewhere", "download": True})
    assert (cfg.seed, cfg.data.subset, cfg.data.data_dir, cfg.data.download) == (
        3, 600, "/elsewhere", True
    )  # fmt: skip
    for key, value, words in (
        ("num_samples", 48, "--num-samples 48 contradicts its 6"),
        ("seed", 0, "--seed 0 contradicts its 3"),  # typed at its default: still refused
        ("subset", 300, "--subset 300 contradicts its 600"),
        ("space", "bridge", "--space bridge contradicts its quick"),
        ("objectives", "val_acc:max", "--objectives val_acc:max contradicts its val_acc:max,"),
        ("verbose", True, "--verbose True contradicts its False"),
    ):
        with pytest.raises(ValueError, match=re.escape(words)) as error:
            stored_config(resumed, {key: value})
        assert str(error.value).startswith(f"--resume continues {tmp_path / 'q'} as it started")


def test_search_json_names_its_space_so_a_resume_finds_it_from_any_folder(tmp_path, monkeypatch):
    own = tmp_path / "spaces" / "mine.yaml"
    own.parent.mkdir()
    own.write_text(SPACES_DIR.joinpath("quick.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    for given, recorded in (("quick", "quick"), ("spaces/mine.yaml", str(own))):
        cfg = SearchConfig(space=given, name="q", storage=str(tmp_path / "runs"))
        exp = cfg.experiment_dir
        exp.mkdir(parents=True, exist_ok=True)
        (exp / "search.json").write_text(json.dumps(search_record(cfg)))
        (exp / "tuner.pkl").write_bytes(b"")
        monkeypatch.chdir(tmp_path / "spaces")  # elsewhere
        resumed = SearchConfig(name="q", storage=str(tmp_path / "runs"), resume=True)
        assert stored_config(resumed).space == recorded
        assert prepare(resumed)[1].path.resolve() == load_space(recorded).path.resolve()
        monkeypatch.chdir(tmp_path)


def test_a_resume_keeps_the_space_it_started_with_though_the_file_changed_or_went(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text(SPACES_DIR.joinpath("quick.yaml").read_text())
    started = load_space(own)
    cfg = SearchConfig(space=str(own), name="q", storage=str(tmp_path / "runs"))
    exp = cfg.experiment_dir
    exp.mkdir(parents=True)
    (exp / "search.json").write_text(json.dumps(search_record(cfg.resolved(started))))
    (exp / "tuner.pkl").write_bytes(b"")
    (exp / "search_space.yaml").write_text(own.read_text())  # as the search makes it
    resumed = SearchConfig(name="q", storage=str(tmp_path / "runs"), resume=True)
    own.write_text(own.read_text().replace("lr:", "lr_renamed:"))  # edited since
    for _ in ("edited", "another machine"):
        space = prepare(resumed)[1]
        assert space.params == started.params and space.defaults == started.defaults
        assert space.name == "mine"  # as the file was named, not as its copy is
        own.unlink(missing_ok=True)


def test_a_damaged_search_json_is_one_error(tmp_path):
    exp = tmp_path / "q"
    exp.mkdir()
    resumed = SearchConfig(name="q", storage=str(tmp_path), resume=True)
    for text in ("[1, 2]", '{"num_samples": "3"}', '{"data": {"subset": "x"}}', "{"):
        (exp / "search.json").write_text(text)
        with pytest.raises(ValueError, match=r"--resume: cannot use .*search.json"):
            stored_config(resumed)


def test_a_name_must_be_a_plain_folder_name():
    for name in ("", ".", "..", "a/b"):
        with pytest.raises(ValueError, match="must be a plain folder name"):
            SearchConfig(name=name)
    assert SearchConfig(name="..a").name == "..a"


def test_cpus_per_trial_ray_could_never_schedule_are_refused():
    # nan and inf passed: the data loaded, Ray started, and the search waited forever.
    for cpus in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"--cpus-per-trial=(nan|inf) must be > 0 and finite"):
            SearchConfig(cpus_per_trial=cpus)


def test_a_warm_started_search_resumes_without_seeding_again(tmp_path):
    space = load_space("quick")
    old = tmp_path / "gone"  # the folder it was seeded from need not exist any more
    started = SearchConfig(space="quick", name="w", storage=str(tmp_path), warm_start=str(old))
    exp = tmp_path / "w"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"")
    (exp / "search.json").write_text(json.dumps(search_record(started.resolved(space))))
    cfg, _ = prepare(SearchConfig(name="w", storage=str(tmp_path), resume=True))
    assert cfg.resume and cfg.warm_start == str(old)  # kept as the search's record
    with pytest.raises(ValueError, match="--warm-start seeds a new study"):
        prepare(SearchConfig(name="w", storage=str(tmp_path), resume=True, warm_start=str(exp)))


@pytest.mark.parametrize("key", ["storage", "snapshot"])
def test_a_folder_under_a_file_is_refused_before_any_work(tmp_path, key):
    # It could never be made: --storage failed with a traceback once the data had loaded and
    # Ray had started, --snapshot after the whole search.
    notes = tmp_path / "notes.txt"
    notes.write_text("")
    with pytest.raises(ValueError, match=rf"--{key} {notes} is a file; expected a folder"):
        SearchConfig(**{key: str(notes / "runs")})


def test_a_space_that_forms_no_grid_is_refused_before_any_folder_is_made(tmp_path):
    cfg = SearchConfig(space="quick", name="g", storage=str(tmp_path), searcher="grid")
    with pytest.raises(ValueError, match="the grid searcher needs unconditional choice"):
        prepare(cfg)
    assert not (tmp_path / "g").exists()


def test_a_grid_search_of_more_samples_than_grid_points_is_refused(tmp_path):
    grid = SearchConfig(space="baselines", name="g", storage=str(tmp_path))
    with pytest.raises(ValueError, match=r"--num-samples 7 exceeds the grid's 6 points"):
        prepare(dataclasses.replace(grid, num_samples=7))
    assert prepare(dataclasses.replace(grid, num_samples=6))[0].num_samples == 6
    assert prepare(dataclasses.replace(grid, num_samples=7, searcher="random"))[0].num_samples == 7
