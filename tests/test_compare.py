"""`python -m ecab_tune.compare`: the study's command, its errors, and a whole small study."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from study_support import PNGS, needs_fmnist, write_study

from ecab_tune.compare import main
from ecab_tune.study.runs import RUNS, read_runs


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
        (
            {"ablations": {"seeds": 3, "arms": {"x": {"attention": "se"}}}},
            [],
            "ablations.seeds=3 exceeds seeds=2",
        ),
        ({"convergence": {"arm": "none", "seeds": 3, "epochs": 2}}, [], "convergence.seeds=3"),
        ({}, ["--cpus-per-trial", "0"], "--cpus-per-trial=0.0 must be > 0"),
        ({}, ["--arms", "gate"], "--arms: no arm 'gate'"),
        ({}, ["--jobs", "0"], "--jobs=0 must be >= 1"),
        ({}, ["--only-seeds", "2"], "--only-seeds: no run has seed 2 (seeds here: 0..1)"),
        (
            {},
            ["--only", "convergence", "--only-seeds", "1"],
            "no run has seed 1 (seeds here: 0..0)",
        ),
        ({}, ["--only", "ablation", "--arms", "se"], "--only ablation selects none of this"),
        ({}, ["--readme", "nowhere.md"], "--readme nowhere.md: [Errno 2]"),
        ({}, ["--readme", __file__], "needs one <!-- begin study:tiny --> ... <!-- end"),
    ],
)
def test_bad_study_files_and_flags_fail_before_any_work(changes, argv, words, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main([str(write_study(tmp_path, **changes)), *argv, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out" / RUNS).exists()


def test_the_report_refuses_rows_of_another_configuration(capsys, tmp_path):
    from ecab_tune.study.runs import append_run

    append_run(tmp_path / "out", {"arm": "se", "seed": 0, "epochs": 1, "run_key": "another",
                                  "status": "completed", "test_acc": 0.5})  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main([str(write_study(tmp_path)), "--report", "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "holds runs of another configuration (se seed 0" in capsys.readouterr().err


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

    # ... and so is the README's block of it, between its markers; the rest stays as written.
    readme = tmp_path / "docs" / "README.md"
    readme.parent.mkdir()
    readme.write_text("# Mine\n<!-- begin study:tiny -->\nSTALE\n<!-- end study:tiny -->\nEnd.\n")
    assert main([str(study), "--out", str(out), "--report", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Mine\n<!-- begin study:tiny -->\n| arm |") and text.endswith(
        "<!-- end study:tiny -->\nEnd.\n"
    )
    assert "STALE" not in text and "### Ablation" in text
    assert table_rows(text.replace("### ", "## ")) == cells
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert sorted(Path(link).name for link in links) == sorted(PNGS)
    assert all((readme.parent / link).resolve() == (out / Path(link).name) for link in links)

    # Rows of another configuration never mix with this study's.
    with pytest.raises(SystemExit):
        main([str(study), "--out", str(out), "--epochs", "3"])
    assert "holds runs of another configuration" in capsys.readouterr().err


def test_only_trains_the_named_groups_and_seeds(tmp_path, monkeypatch, capsys):
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

    trained.clear()  # whole seeds, to keep each seed's pairs on one machine
    with pytest.raises(SystemExit):
        main([*argv, "--only", "main", "ablation", "--only-seeds", "1"])
    assert sorted((j.group, j.arm, j.seed) for j in trained) == [
        ("ablation", "ecab-block", 1),
        ("main", "ecab", 1),
        ("main", "none", 1),
        ("main", "se", 1),
    ]
    assert "(main, ablation, seed 1)" in capsys.readouterr().out


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...); None once gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def state(pid: int) -> str:
    fields = proc_stat(pid)
    return fields[0] if fields else "gone"


def alive_children(pid: int) -> list[int]:
    """Live (not zombie) child processes of `pid`."""
    pids = (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    return [c for c in pids if (f := proc_stat(c)) and int(f[1]) == pid and f[0] != "Z"]


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow
@needs_fmnist
# SIGINT ignored: how a script's background job (`cmd &`) starts, and so Ctrl-C's route is shut.
@pytest.mark.parametrize("start", [None, ignore_sigint], ids=["plain", "sigint-ignored"])
def test_sigterm_stops_the_study_and_its_runs_in_flight(tmp_path, start):
    cmd = [sys.executable, "-m", "ecab_tune.compare", str(write_study(tmp_path)),
           "--out", str(tmp_path / "out"), "--only", "main", "--epochs", "40", "--jobs", "2",
           "--device", "cpu"]  # fmt: skip
    study = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=start
    )
    partial = tmp_path / "runs" / "study-partial" / "out"
    deadline = time.monotonic() + 120
    while not list(partial.glob("*/meta.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = [p for p in alive_children(study.pid) if b"spawn_main" in cmdline(p)]
    assert len(workers) == 2, "two runs in flight"
    study.send_signal(signal.SIGTERM)
    output = study.communicate(timeout=60)[0].decode()
    assert study.returncode == 143, output
    assert "interrupted: finished runs are in" in output
    deadline = time.monotonic() + 10
    while any(state(w) not in ("gone", "Z") for w in workers):  # Z: ended, not yet reaped
        assert time.monotonic() < deadline, "a run kept training after its study stopped"
        time.sleep(0.1)
    assert list(partial.glob("*/meta.json")), "each run resumes from its last epoch"


def cmdline(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


def test_a_narrowed_study_reports_over_the_study_file_s_whole_family(tmp_path):
    # --arms narrows what is trained, not the question: the report of a results folder keeps
    # every arm's rows and Holm's planned family (3 here: se − none, ecab − none, ecab − se).
    from ecab_tune.study.runs import append_run
    from ecab_tune.study.spec import Job, load_spec

    study, out = write_study(tmp_path), tmp_path / "out"
    spec = load_spec(study)
    for seed in (0, 1):
        for arm, acc in (("none", 0.90), ("se", 0.91 + seed / 100), ("ecab", 0.92)):
            job = Job(arm, seed, spec.train.epochs, "main")
            append_run(out, {"arm": arm, "seed": seed, "epochs": job.epochs, "group": "main",
                             "run_key": spec.run_key(job), "status": "completed",
                             "test_acc": acc, "val_acc": [acc], "params": 1, "macs": 1,
                             "seconds": 1.0, "init_hash": f"h{seed}", "device": "cpu"})  # fmt: skip
    assert main([str(study), "--out", str(out), "--report"]) == 0
    whole = (out / "table.md").read_text()
    assert "the 3 planned contrasts form one family" in whole
    assert main([str(study), "--out", str(out), "--report", "--arms", "ecab"]) == 0
    assert (out / "table.md").read_text() == whole
