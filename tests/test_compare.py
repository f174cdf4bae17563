import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from ecab_tune.compare import main
from ecab_tune.study.runs import RUNS, read_runs
from ecab_tune.study.spec import load_spec

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not FMNIST.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (scripts/setup.sh installs it)",
)
PNGS = ("accuracy_vs_params.png", "learning_curves.png", "paired_differences.png")


# ---------------------------------------------------------------- the study file and CLI
def write_study(folder: Path, **changes) -> Path:
    study = {
        "name": "tiny",
        "model": "resnet8",
        "width": 0.25,
        "data": {"dataset": "fashion-mnist", "subset": 300, "val_fraction": 0.2},
        "train": {"epochs": 1, "batch_size": 64, "warmup_epochs": 0.5},
        "seeds": 2,
        "baseline": "none",
        "focus": "ecab",
        "arms": {
            "none": {"attention": "none"},
            "se": {"attention": "se", "options": {"reduction": 4}},
            "ecab": {"attention": "ecab", "options": {"fusion": "sum", "layers": "last2"}},
        },
        "ablations": {
            "seeds": 2,
            "arms": {"ecab-block": {"attention": "ecab", "options": {"layers": "block"}}},
        },
        "convergence": {"arm": "none", "seeds": 1, "epochs": 2},
    }
    study.update(changes)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


BAD = {"fusion": "sum"}


@pytest.mark.parametrize(
    "changes,argv,words",
    [
        ({"color": "red"}, [], "unknown key(s) color"),
        ({"focus": "cbam"}, [], "focus='cbam' is not one of the arms"),
        (
            {
                "ablations": {
                    "seeds": 1,
                    "arms": {"x": {"attention": "se", "options": {"fusion": 1}}},
                }
            },
            [],
            "'se' takes no option 'fusion'",
        ),
        ({"train": {"lr": -1}}, [], "lr=-1 is invalid"),
        ({}, ["--cpus-per-trial", "0"], "--cpus-per-trial=0.0 must be > 0"),
        ({}, ["--arms", "gate"], "--arms: no arm 'gate'"),
        ({}, ["--jobs", "0"], "--jobs=0 must be >= 1"),
    ],
)
def test_bad_study_files_and_flags_fail_before_any_work(changes, argv, words, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main([str(write_study(tmp_path, **changes)), *argv, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out" / RUNS).exists()


def test_the_committed_study_file_is_valid_and_pairs_every_arm():
    spec = load_spec(Path(__file__).parents[1] / "studies" / "fmnist-resnet20.yaml")
    assert set(spec.arms) == {"none", "se", "cbam", "eca", "bridge", "bav2", "ecab", "ecab_head"}
    assert spec.seeds >= 5 and spec.data.val_fraction > 0
    jobs = spec.jobs()
    assert len({(j.arm, j.seed, j.epochs) for j in jobs}) == len(jobs)
    assert jobs[0].group == "convergence" and jobs[0].epochs == 2 * spec.train.epochs


def table_rows(table: str) -> dict[str, list[str]]:
    first = table.split("\n\n## ")[0]
    rows = [line.strip("|").split("|") for line in first.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


@pytest.mark.slow
@needs_fmnist
def test_study_end_to_end_resumes_and_rebuilds_its_report(tmp_path, capsys):
    study, out = write_study(tmp_path), tmp_path / "out"
    assert main([str(study), "--out", str(out), "--jobs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "9 to train" in printed and "9/9 " in printed

    rows = read_runs(out)
    assert {(r["arm"], r["seed"], r["epochs"]) for r in rows} == {
        *((a, s, 1) for a in ("none", "se", "ecab", "ecab-block") for s in (0, 1)),
        ("none", 0, 2),
    }
    for seed in (0, 1):  # one initial trunk per seed, whatever the arm
        assert len({r["init_hash"] for r in rows if r["seed"] == seed}) == 1
    assert rows[0]["init_hash"] != next(r for r in rows if r["seed"] == 1)["init_hash"]
    for r in rows:
        assert 0 <= r["test_acc"] <= 1 and len(r["val_acc"]) == r["epochs"]
        assert r["test_acc"] == r["test_acc_curve"][-1] and r["macs"] > 0

    table = (out / "table.md").read_text()
    cells = table_rows(table)
    assert list(cells) == ["none", "se", "ecab"]
    assert cells["none"][2] == "—" and "Holm" in cells["se"][2] and "p=" in cells["se"][3]
    assert "## Ablation" in table and "| ecab-block | layers=block | 2 |" in table
    assert "doubling adds" in table and "one `init_hash` per seed" in table
    for name in PNGS:
        with Image.open(out / name) as image:
            image.verify()

    # Resume: nothing is trained twice; a lost run (and a torn last line) is trained again.
    lines = (out / RUNS).read_text().splitlines()
    (out / RUNS).write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    assert main([str(study), "--out", str(out)]) == 0
    assert "1 to train" in capsys.readouterr().out
    assert len(read_runs(out)) == 9

    # The report is rebuilt from runs.jsonl alone.
    after_resume = (out / "table.md").read_text()
    (out / "table.md").unlink()
    assert main([str(study), "--out", str(out), "--report"]) == 0
    assert (out / "table.md").read_text() == after_resume

    # Rows of another configuration never mix with this study's.
    with pytest.raises(SystemExit):
        main([str(study), "--out", str(out), "--epochs", "3"])
    assert "holds runs of another configuration" in capsys.readouterr().err


@pytest.mark.slow
@needs_fmnist
def test_a_killed_run_resumes_from_its_last_epoch_exactly(tmp_path, monkeypatch, capsys):
    from ecab_tune.study import runner
    from ecab_tune.study.spec import Job

    spec = load_spec(write_study(tmp_path)).overridden(epochs=2)
    job = Job("ecab", 0, 2, "main")
    straight = runner.run_job(spec, job, "cpu", 1, tmp_path / "straight")

    real_save = runner.save_trainer

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after epoch 1's checkpoint

    monkeypatch.setattr(runner, "save_trainer", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        runner.run_job(spec, job, "cpu", 1, tmp_path / "partial")
    monkeypatch.setattr(runner, "save_trainer", real_save)
    meta = tmp_path / "partial" / "meta.json"  # as if epoch 1 had run on another machine's GPU
    saved = json.loads(meta.read_text())
    saved["extra"]["devices"] = ["Some GPU"]
    meta.write_text(json.dumps(saved))
    resumed = runner.run_job(spec, job, "cpu", 1, tmp_path / "partial")
    assert "resuming at epoch 1" in capsys.readouterr().out
    for key in ("val_acc", "test_acc_curve", "test_acc", "init_hash"):
        assert resumed[key] == straight[key], key
    assert resumed["device"] == f"Some GPU + {straight['device']}"


def test_only_trains_the_named_groups(tmp_path, monkeypatch, capsys):
    from ecab_tune import compare

    trained = []
    monkeypatch.setattr(compare, "run_local", lambda spec, jobs, *rest: trained.extend(jobs))
    argv = [str(write_study(tmp_path)), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit):  # nothing was really trained: no runs to report
        main([*argv, "--only", "ablation", "convergence"])
    assert sorted((j.group, j.arm, j.seed) for j in trained) == [
        ("ablation", "ecab-block", 0),
        ("ablation", "ecab-block", 1),
        ("convergence", "none", 0),
    ]
    assert "3 to train" in capsys.readouterr().out


def test_cuda_graphs_leave_a_runs_identity_alone_and_the_recipe_does_not():
    spec = load_spec(Path(__file__).parents[1] / "studies" / "fmnist-resnet20.yaml")
    graphed = dataclasses.replace(spec, train=dataclasses.replace(spec.train, cuda_graphs=True))
    other = dataclasses.replace(spec, train=dataclasses.replace(spec.train, lr=0.05))
    for job in spec.jobs():
        assert graphed.run_key(job) == spec.run_key(job) != other.run_key(job)


def test_rows_of_arms_left_out_are_kept_and_rows_of_another_recipe_refused(tmp_path):
    from ecab_tune.study.runner import pending_jobs
    from ecab_tune.study.runs import append_run
    from ecab_tune.study.spec import Job

    spec = load_spec(write_study(tmp_path))
    done = Job("se", 0, spec.train.epochs, "main")
    append_run(tmp_path, {"arm": "se", "seed": 0, "epochs": done.epochs,
                          "run_key": spec.run_key(done), "status": "completed"})  # fmt: skip
    narrowed = spec.overridden(arms=["ecab"])  # se is not trained now: its row stays valid
    assert {j.arm for j in pending_jobs(narrowed, tmp_path)} == {"none", "ecab"}
    assert done not in pending_jobs(spec, tmp_path)
    with pytest.raises(ValueError, match="another configuration"):
        pending_jobs(spec.overridden(epochs=3), tmp_path)
