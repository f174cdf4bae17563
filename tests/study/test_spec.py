"""The study file (`ecab_tune.study.spec`): the committed one, and what makes a run's identity."""

import dataclasses
from pathlib import Path

from ecab_tune.study.spec import load_spec

STUDY = Path(__file__).resolve().parents[2] / "studies" / "fmnist-resnet20.yaml"


def test_the_committed_study_file_is_valid_and_pairs_every_arm():
    spec = load_spec(STUDY)
    assert set(spec.arms) == {"none", "se", "cbam", "eca", "bridge", "bav2", "ecab", "ecab_head"}
    assert spec.seeds >= 5 and spec.data.val_fraction > 0
    jobs = spec.jobs()
    assert len({(j.arm, j.seed, j.epochs) for j in jobs}) == len(jobs)
    assert jobs[0].group == "convergence" and jobs[0].epochs == 2 * spec.train.epochs


def test_cuda_graphs_leave_a_runs_identity_alone_and_the_recipe_does_not():
    spec = load_spec(STUDY)
    graphed = dataclasses.replace(spec, train=dataclasses.replace(spec.train, cuda_graphs=True))
    other = dataclasses.replace(spec, train=dataclasses.replace(spec.train, lr=0.05))
    for job in spec.jobs():
        assert graphed.run_key(job) == spec.run_key(job) != other.run_key(job)


def test_rows_keyed_before_a_recipe_field_existed_match_runs_that_keep_its_old_value():
    from ecab_tune.study.runner import study_rows

    # The committed pilot's rows were keyed before TrainConfig had `compile`.
    pilot = STUDY.with_name("fmnist-resnet20-pilot30.yaml")
    folder = STUDY.parents[1] / "benchmarks" / "results" / "fmnist-resnet20-pilot30"
    rows = study_rows(load_spec(pilot), folder)
    assert len(rows) == len((folder / "runs.jsonl").read_text().splitlines()) == 8
    spec = load_spec(STUDY)
    job = spec.jobs()[0]
    old = spec.run_key(job, without=("compile",))
    assert old != spec.run_key(job) and old in spec.run_keys(job)
    compiled = dataclasses.replace(spec, train=dataclasses.replace(spec.train, compile=True))
    assert old not in compiled.run_keys(job)  # no run before `compile` was compiled
