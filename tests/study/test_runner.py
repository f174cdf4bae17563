"""Training a study's runs (`ecab_tune.study.runner`): resume, and which runs are still to do."""

import json
import re
import signal
import threading
import time

import pytest
from study_support import needs_fmnist, write_study

from ecab_tune.device import cpu_name
from ecab_tune.reporting.cost import count_params
from ecab_tune.study.spec import load_spec


@pytest.mark.slow
@needs_fmnist
def test_a_killed_run_resumes_from_its_last_epoch_exactly(tmp_path, monkeypatch, capsys):
    from ecab_tune.study import runner
    from ecab_tune.study.spec import Job

    spec = load_spec(write_study(tmp_path)).overridden(epochs=2)
    job = Job("ecab", 0, 2, "main")
    straight = runner.run_job(spec, job, "cpu", 1, tmp_path / "straight")
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"\[study\] ecab seed 0: epoch 1/2  val \S+%  \d+s  ~\d+\S* left", lines[0])
    assert re.fullmatch(r"\[study\] ecab seed 0: epoch 2/2  val \S+%  \d+s", lines[1])

    killed_after_epoch_1(monkeypatch, spec, job, tmp_path / "partial")
    # An epoch's line comes after its checkpoint: a run stopped after a line loses nothing.
    assert "epoch 1/2" not in capsys.readouterr().out
    resumed = runner.run_job(spec, job, "cpu", 1, tmp_path / "partial")
    printed = capsys.readouterr().out
    assert "resuming at epoch 1" in printed and "[study] ecab seed 0: epoch 2/2  val " in printed
    for key in ("val_acc", "test_acc_curve", "test_acc", "init_hash"):
        assert resumed[key] == straight[key], key
    assert resumed["device"] == f"Some GPU + {straight['device']}"
    assert straight["cpu"] == cpu_name() and resumed["cpu"] == f"Some CPU + {cpu_name()}"
    # ECAB's projection as separate per-source layers would hold it, not its stored zeros.
    model = spec.model_config("ecab", 10, 1).build()
    assert straight["params"] == count_params(model) < sum(p.numel() for p in model.parameters())


def killed_after_epoch_1(monkeypatch, spec, job, partial) -> None:
    """Train `job` until epoch 1's checkpoint is in `partial`, then die as a kill would; mark
    that epoch as trained on another machine's GPU, so a resumed row shows it."""
    from ecab_tune.study import runner

    real_save = runner.save_trainer

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(runner, "save_trainer", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            runner.run_job(spec, job, "cpu", 1, partial)
    meta = partial / "meta.json"
    saved = json.loads(meta.read_text())
    saved["extra"]["devices"], saved["extra"]["cpus"] = ["Some GPU"], ["Some CPU"]
    meta.write_text(json.dumps(saved))


@pytest.mark.slow
@needs_fmnist
def test_a_ray_task_resumes_a_run_in_flight(local_ray, tmp_path, monkeypatch):
    from ecab_tune.study import runner
    from ecab_tune.study.runs import read_runs
    from ecab_tune.study.spec import Job

    monkeypatch.chdir(tmp_path)  # runs in flight live under ./runs/study-partial
    spec = load_spec(write_study(tmp_path)).overridden(epochs=2)
    job, out = Job("ecab", 0, 2, "main"), tmp_path / "results"
    partial = runner.partial_folder(out, job)
    killed_after_epoch_1(monkeypatch, spec, job, partial)
    runner.run_ray(spec, [job], out, None, 1, 0)
    (row,) = read_runs(out)
    # Epoch 1 came from the checkpoint (its device is recorded), epoch 2 from the task.
    assert row["device"].startswith("Some GPU + ") and len(row["val_acc"]) == 2
    assert row["cpu"].startswith("Some CPU + ")
    assert not partial.exists()  # the row landed: its checkpoint is gone


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


@needs_fmnist
def test_a_checkpoint_in_flight_of_another_configuration_is_refused(tmp_path, monkeypatch):
    from ecab_tune import checkpoint
    from ecab_tune.data import load_data
    from ecab_tune.study import runner

    monkeypatch.setattr(runner.Trainer, "fit", lambda *a: pytest.fail("it trained"))
    spec = load_spec(write_study(tmp_path))
    job = spec.jobs()[-1]
    info = load_data(spec.data, runner.DATA_SEED).info
    mine = spec.model_config(job.arm, len(info.classes), info.channels)
    # Saved by another study under the same folder name: its key says so, or (saved before
    # keys were kept) its model does.
    other = spec.model_config("ecab" if job.arm != "ecab" else "se", 10, 1)
    for model_cfg, extra in ((mine, {"run_key": "another"}), (other, {})):
        checkpoint.save(
            tmp_path / "p", model_cfg.build(), checkpoint.Meta(model_cfg, info, extra=extra)
        )
        with pytest.raises(ValueError, match="holds a run in flight of another configuration"):
            runner.run_job(spec, job, "cpu", 1, tmp_path / "p")
        assert (tmp_path / "p" / checkpoint.META).is_file()  # kept, not overwritten


@pytest.mark.slow
@needs_fmnist
@pytest.mark.parametrize("at", [1, 2])
def test_a_diverged_run_reports_its_final_model(at, tmp_path, monkeypatch):
    from ecab_tune.study import runner

    real = runner.Trainer.train_epoch

    def nan_at(trainer):
        loss, acc, speed = real(trainer)
        return (float("nan") if trainer.epoch + 1 == at else loss), acc, speed

    monkeypatch.setattr(runner.Trainer, "train_epoch", nan_at)
    spec = load_spec(write_study(tmp_path)).overridden(epochs=3)
    row = runner.run_job(spec, runner.Job("se", 0, 3, "main"), "cpu", 1, tmp_path / "p")
    assert row["status"] == "diverged"
    assert len(row["val_acc"]) == len(row["test_acc_curve"]) == at
    assert row["test_acc"] == row["test_acc_curve"][-1]


def test_rows_of_seeds_the_study_lacks_or_of_a_run_twice_are_refused(tmp_path):
    from ecab_tune.study.runner import study_rows
    from ecab_tune.study.runs import append_run
    from ecab_tune.study.spec import Job

    spec = load_spec(write_study(tmp_path))  # seeds 0 and 1
    for seed, words in ((7, "holds se seed 7 at 1 epochs, which is no run"), (0, "twice")):
        job = Job("se", seed, spec.train.epochs, "main")
        append_run(tmp_path, {"arm": "se", "seed": seed, "epochs": job.epochs,
                              "run_key": spec.run_key(job), "status": "completed"})  # fmt: skip
        if seed == 0:
            assert len(study_rows(spec, tmp_path)) == 1
            (tmp_path / "runs.jsonl").write_text((tmp_path / "runs.jsonl").read_text() * 2)
        with pytest.raises(ValueError, match=words):
            study_rows(spec, tmp_path)
        (tmp_path / "runs.jsonl").unlink()


def test_rows_of_one_arm_that_disagree_on_its_cost_are_refused(tmp_path):
    from ecab_tune.study.runner import study_rows
    from ecab_tune.study.runs import append_run
    from ecab_tune.study.spec import Job

    spec = load_spec(write_study(tmp_path))
    for seed, params in ((0, 6166), (1, 7958)):  # as counted with and without the stored zeros
        job = Job("ecab", seed, spec.train.epochs, "main")
        row = {"arm": "ecab", "seed": seed, "epochs": job.epochs, "run_key": spec.run_key(job)}
        append_run(tmp_path, {**row, "params": params, "macs": 1, "status": "completed"})
    with pytest.raises(ValueError, match="ecab seeds 0 and 1 record params 6166 and 7958"):
        study_rows(spec, tmp_path)


def test_streams_need_cuda(tmp_path):
    from ecab_tune.study.runner import run_local

    spec = load_spec(write_study(tmp_path))
    with pytest.raises(ValueError, match="--streams needs CUDA"):
        run_local(spec, spec.jobs(), tmp_path / "out", 2, "cpu", streams=True)


def test_runs_in_flight_come_first_the_nearest_to_their_end_first(tmp_path, monkeypatch):
    from ecab_tune import checkpoint
    from ecab_tune.data import DataInfo
    from ecab_tune.study.runner import partial_folder, pending_jobs

    monkeypatch.chdir(tmp_path)  # partial checkpoints live under ./runs/study-partial/
    spec = load_spec(write_study(tmp_path))  # 1 epoch a run; the convergence run 2
    out = tmp_path / "out"
    fresh = pending_jobs(spec, out)
    info = DataInfo("x", tuple("0123456789"), 1, 28, 28, (0.5,), (0.5,), 0, False)
    # The convergence run has 1 of 2 epochs; se seed 1 all of its 1 (killed before its row).
    for job, epochs_done in ((fresh[0], 1), (fresh[5], 1)):
        model_cfg = spec.model_config(job.arm, 10, 1)
        meta = checkpoint.Meta(model_cfg, info, extra={"test_curve": [[0.5, 0.9]] * epochs_done})
        checkpoint.save(partial_folder(out, job), model_cfg.build(), meta)
    assert fresh[0].group == "convergence" and (fresh[5].arm, fresh[5].seed) == ("se", 1)
    assert pending_jobs(spec, out) == [fresh[5], fresh[0], *fresh[1:5], *fresh[6:]]


@pytest.mark.slow
@needs_fmnist
def test_a_signal_handed_to_another_thread_still_stops_the_study(tmp_path, monkeypatch, request):
    # The kernel may deliver SIGTERM to any thread of the process (the pool has two of its
    # own); an untimed wait in the main thread would sleep through it until a run ends.
    from ecab_tune.study import runner

    # Ctrl-C's handler, whatever this process inherited: a suite started as a background job
    # (`.ci/run &`) has SIGINT ignored in every xdist worker, and no signal below would reach us.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))

    monkeypatch.chdir(tmp_path)  # the runs' partial checkpoints go to ./runs
    spec = load_spec(write_study(tmp_path)).overridden(epochs=500)  # no run ends in the test
    jobs = [job for job in spec.jobs() if job.group == "main"][:2]
    other = threading.Thread(target=time.sleep, args=(60,), daemon=True)
    other.start()
    threading.Timer(3.0, signal.pthread_kill, (other.ident, signal.SIGINT)).start()
    # Without a prompt stop, the same signal on the main thread at 20 s ends the wait.
    main = threading.main_thread().ident
    watchdog = threading.Timer(20.0, signal.pthread_kill, (main, signal.SIGINT))
    watchdog.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.run_local(spec, jobs, tmp_path / "out", 2, "cpu")
    watchdog.cancel()
    assert time.monotonic() - start < 15, "the study slept through the signal"
