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
