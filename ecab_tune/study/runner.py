"""Train the study's missing runs: local worker processes (one machine, CPU or GPUs) or Ray
tasks (a cluster); each finished run becomes a line of `runs.jsonl` at once."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import math
import multiprocessing
import os
import shutil
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import torch

from ecab_tune import checkpoint
from ecab_tune.data import load_data
from ecab_tune.device import cpu_name, device_name, ray_task_device, resolve_device
from ecab_tune.engine import EpochResult, Trainer, make_trainer, save_trainer
from ecab_tune.models import ModelConfig, init_hash
from ecab_tune.reporting.cost import count_macs, count_params
from ecab_tune.reporting.document import duration
from ecab_tune.study.runs import append_run, finished, read_runs, row_id
from ecab_tune.study.spec import Job, StudySpec

DATA_SEED = 0  # one validation draw shared by every run: seeds vary init and order only
# Set when a study is interrupted: runs in threads (`--streams`) stop after their next epoch's
# checkpoint (processes are terminated instead; a thread cannot be).
_STOP = threading.Event()


def partial_folder(out: Path, job: Job) -> Path:
    """Where a run in flight keeps its per-epoch checkpoint (outside the committed results)."""
    return Path("runs") / "study-partial" / out.name / f"{job.arm}-seed{job.seed}-{job.epochs}ep"


def run_job(
    spec: StudySpec, job: Job, device: str, threads: int, partial: Path | None = None
) -> dict[str, Any]:
    """Train one arm at one seed; evaluate validation and test after every epoch (test only
    to draw curves: nothing here selects on it). With `partial`, every epoch is checkpointed
    there and a killed run continues from its last epoch, exactly."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    target = resolve_device(device)
    data = load_data(spec.data, DATA_SEED)
    info = data.info
    model_cfg = spec.model_config(job.arm, len(info.classes), info.channels)
    train_cfg = dataclasses.replace(spec.train, epochs=job.epochs, seed=job.seed)
    resume = partial is not None and (partial / checkpoint.META).is_file()
    if resume:
        extra = _own_partial(spec, job, partial, model_cfg)
        first_hash, curve, spent = extra["init_hash"], extra["test_curve"], extra["seconds"]
        devices, cpus = extra.get("devices", []), extra.get("cpus", [])
        trainer = make_trainer(model_cfg, data, train_cfg, target, resume_from=partial)
        print(f"[study] {job.arm} seed {job.seed}: resuming at epoch {trainer.epoch}", flush=True)
    else:
        model = model_cfg.build(seed=job.seed)
        first_hash, curve, spent, devices, cpus = init_hash(model), [], 0.0, [], []
        trainer = Trainer(model, data, train_cfg, target)
    test_curve: list[tuple[float, float]] = [tuple(c) for c in curve]  # (loss, acc) per epoch
    walls: list[float] = []  # each epoch's wall time here, evaluations included: for the ETA
    epoch_began = time.perf_counter()
    # A run resumed elsewhere (begun on a GPU, finished on a CPU) names every device it used.
    here, host = device_name(target), cpu_name()
    devices = devices if here in devices else [*devices, here]
    cpus = cpus if host in cpus else [*cpus, host]

    def on_epoch(result: EpochResult) -> None:
        nonlocal epoch_began
        test_curve.append(trainer.evaluate(trainer.splits.test))
        if partial is not None:
            seconds = spent + time.perf_counter() - start
            extra = {
                "run_key": spec.run_key(job),
                "init_hash": first_hash,
                "test_curve": test_curve,
                "seconds": seconds,
                "devices": devices,
                "cpus": cpus,
            }
            save_trainer(partial, trainer, model_cfg, extra=extra)
        # A line an epoch (a CPU run is hours of them), printed once its checkpoint is on disk:
        # a run stopped after the line resumes after that epoch. Validation only: test is for
        # curves. The time left is from the median epoch here: one slowed or paused epoch
        # (SIGSTOP, a neighbour) does not skew it.
        now = time.perf_counter()
        walls.append(now - epoch_began)
        epoch_began, left = now, job.epochs - result.epoch
        print(
            f"[study] {job.arm} seed {job.seed}: epoch {result.epoch}/{job.epochs}  "
            f"val {result.val_acc:.2%}  {result.seconds:.0f}s"
            + (f"  ~{duration(left * statistics.median(walls))} left" if left else ""),
            flush=True,
        )
        if _STOP.is_set():
            raise KeyboardInterrupt

    fit = trainer.fit(on_epoch)
    if len(test_curve) < len(fit.history):  # diverged: its last epoch saw no on_epoch
        test_curve.append(trainer.evaluate(trainer.splits.test))
    test_loss, test_acc = test_curve[-1]  # the final model's: nothing picks an epoch
    arm = spec.all_arms()[job.arm]
    return {
        "study": spec.name,
        "run_key": spec.run_key(job),
        "arm": job.arm,
        "group": job.group,
        "attention": arm.attention,
        "options": arm.options,
        "seed": job.seed,
        "epochs": job.epochs,
        "status": fit.status,
        "init_hash": first_hash,
        "val_acc": [e.val_acc for e in fit.history],
        "test_acc_curve": [acc for _, acc in test_curve],
        "test_acc": test_acc,
        "test_loss": test_loss,
        "params": count_params(trainer.model),
        "macs": count_macs(trainer.model, (info.channels, info.height, info.width)),
        "images_per_s": statistics.fmean(e.images_per_s for e in fit.history),
        "seconds": round(spent + time.perf_counter() - start, 1),
        "device": " + ".join(devices),
        "cpu": " + ".join(cpus),  # the host's, for a GPU run too
        "precision": trainer.precision,
        "cuda_graphs": trainer.cuda_graphs,
        "torch": torch.__version__,
    }


def _own_partial(
    spec: StudySpec, job: Job, partial: Path, model_cfg: ModelConfig
) -> dict[str, Any]:
    """The extra data of the checkpoint in flight at `partial`, if it is this run's.

    The folder is named by `--out`'s last part, arm, seed and epochs: another study's run (or
    this one's before an edit) can sit there, and resuming it would record its weights under
    this run's identity. Checkpoints saved before `run_key` was kept are matched by model.
    """
    meta = checkpoint.read_meta(partial)
    key = meta.extra.get("run_key")
    ours = key == spec.run_key(job) if key is not None else meta.model == model_cfg
    if not ours:
        raise ValueError(
            f"{partial} holds a run in flight of another configuration than {job.arm} seed "
            f"{job.seed} of this study: move it away, or use another --out"
        )
    return meta.extra


def study_rows(spec: StudySpec, out: Path) -> list[dict[str, Any]]:
    """The rows of `out/runs.jsonl`; refuses a file that holds runs of another configuration."""
    rows = read_runs(out)
    keys = set().union(*(spec.run_keys(j) for j in spec.jobs()))
    # Rows of arms left out (`--arms`) are the study's too, only not trained now.
    arms = spec.all_arms()
    foreign = [r for r in rows if r.get("arm") in arms and r.get("run_key") not in keys]
    if foreign:
        r = foreign[0]
        raise ValueError(
            f"{out}/runs.jsonl holds runs of another configuration ({r.get('arm')} seed "
            f"{r.get('seed')}: different recipe, data, options or epochs): use another --out"
        )
    # A seed the study does not have (a quick look's `--seeds`), or a run twice (two machines'
    # files joined): either would change n without a word.
    planned = {(j.arm, j.seed, j.epochs) for j in spec.jobs()}
    planned_arms = {arm for arm, _, _ in planned}
    seen: set[tuple[Any, Any, Any]] = set()
    for r in rows:
        run = (r.get("arm"), r.get("seed"), r.get("epochs"))
        what = f"{out}/runs.jsonl holds {run[0]} seed {run[1]} at {run[2]} epochs"
        if run[0] in planned_arms and run not in planned:
            raise ValueError(f"{what}, which is no run of this study: use another --out")
        if run in seen:
            raise ValueError(f"{what} twice: keep one")
        seen.add(run)
    _check_costs(rows, out)
    return rows


def _check_costs(rows: list[dict[str, Any]], out: Path) -> None:
    """An arm's parameters and MACs are one table cell, whatever the seed: rows that disagree
    were counted by different code (ECAB's stored zeros were once counted) and need recounting."""
    first: dict[str, dict[str, Any]] = {}
    for r in rows:
        seen = first.setdefault(r.get("arm"), r)
        for key in ("params", "macs"):
            if r.get(key) != seen.get(key):
                raise ValueError(
                    f"{out}/runs.jsonl: {r.get('arm')} seeds {seen.get('seed')} and "
                    f"{r.get('seed')} record {key} {seen.get(key)} and {r.get(key)}: one was "
                    "counted by other code; recount it with ecab_tune.reporting.cost"
                )


def pending_jobs(spec: StudySpec, out: Path) -> list[Job]:
    """The study's runs not yet in `out/runs.jsonl`; refuses a file made by another study."""
    done = finished(study_rows(spec, out))
    pending = [j for j in spec.jobs() if row_id(j.arm, j.seed, j.epochs) not in done]
    # Runs partway go first, the nearest to their end first: a slot that ends (a lent GPU, a
    # session) then finishes runs instead of leaving several half-done. The rest keep the
    # spec's order (longest first).
    return sorted(pending, key=lambda job: _epochs_left(out, job))


def _epochs_left(out: Path, job: Job) -> float:
    """Epochs a run still has to train if it is in flight; infinity for one not begun."""
    try:
        meta = checkpoint.read_meta(partial_folder(out, job))
    except checkpoint.CheckpointError:
        return math.inf
    return job.epochs - len(meta.extra.get("test_curve", []))


def _announce(row: dict[str, Any], done: int, total: int, start: float) -> None:
    elapsed = time.perf_counter() - start
    eta = elapsed / done * (total - done)
    print(
        f"[study] {done}/{total} {row['arm']:<14} seed {row['seed']} ({row['epochs']} ep): "
        f"test {row['test_acc']:.2%}  val {row['val_acc'][-1]:.2%}  {row['seconds']:.0f}s  "
        f"{row['status']}  on {row['device']}  (elapsed {elapsed / 60:.0f} min, "
        f"~{eta / 60:.0f} min left)",
        flush=True,
    )


def _on_own_stream(
    spec: StudySpec, job: Job, device: str, threads: int, partial: Path
) -> dict[str, Any]:
    with torch.cuda.stream(torch.cuda.Stream(device=device)):
        return run_job(spec, job, device, threads, partial)


def run_local(
    spec: StudySpec, jobs: list[Job], out: Path, workers: int, device: str, streams: bool = False
) -> None:
    """`workers` processes on this machine, each on one device (round-robin over GPUs); with
    `streams`, threads of this process instead, each run on its own CUDA stream: processes
    only take turns on a GPU, while kernels of different streams can run side by side."""
    gpus = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    devices = [f"cuda:{i % gpus}" for i in range(len(jobs))] if gpus else [device] * len(jobs)
    if streams and not gpus:
        raise ValueError("--streams needs CUDA (a CPU has no streams to overlap)")
    threads = max(1, (os.cpu_count() or 1) // workers)
    start = time.perf_counter()
    # spawn: a forked child of a process that touched CUDA cannot use it.
    pool: cf.Executor = (
        cf.ThreadPoolExecutor(workers)
        if streams
        else cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    )
    work = _on_own_stream if streams else run_job
    _STOP.clear()
    with pool:
        futures = {
            pool.submit(work, spec, job, dev, threads, partial_folder(out, job)): job
            for job, dev in zip(jobs, devices, strict=True)
        }
        try:
            pending, done = set(futures), 0
            while pending:
                # Timed: a SIGTERM the kernel hands to one of the pool's threads does not wake
                # a main thread blocked in an untimed wait (shown with a signal aimed at another
                # thread); woken each second, it sees the signal and stops the study.
                ended, pending = cf.wait(pending, timeout=1.0, return_when=cf.FIRST_COMPLETED)
                for future in ended:
                    row = future.result()
                    append_run(out, row)
                    shutil.rmtree(partial_folder(out, futures[future]), ignore_errors=True)
                    done += 1
                    _announce(row, done, len(jobs), start)
        except BaseException:
            _stop(pool)
            raise


def _stop(pool: cf.Executor) -> None:
    """Ctrl-C, SIGTERM or a failed run: the runs in flight stop too, not left to train on
    unseen; each resumes from its last epoch's checkpoint."""
    _STOP.set()
    processes = list((getattr(pool, "_processes", None) or {}).values())  # gone after shutdown
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


def _ray_job(spec: StudySpec, job: Job, threads: int, partial: Path) -> dict[str, Any]:
    """A Ray task checkpoints where the driver would (an absolute path): on its machine or on
    storage the nodes share, a task killed mid-run (a lost node, a killed driver) resumes."""
    try:
        partial.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a node that cannot write there trains as before: killed, it restarts
        print(f"[study] {job.arm} seed {job.seed}: no checkpoints on this node ({exc})", flush=True)
        return run_job(spec, job, str(ray_task_device()), threads)
    return run_job(spec, job, str(ray_task_device()), threads, partial)


def run_ray(
    spec: StudySpec, jobs: list[Job], out: Path, address: str | None, cpus: float, gpus: float
) -> None:
    """One Ray task per run; a task that reserved a GPU trains on it (Ray sets which)."""
    import ray

    from ecab_tune.cluster import start_ray

    start_ray(address, dashboard=False, tag="study")
    available = ray.cluster_resources()
    for flag, key, need in (("--cpus-per-trial", "CPU", cpus), ("--gpus-per-trial", "GPU", gpus)):
        if need > available.get(key, 0):  # the task could never be scheduled: fail, don't hang
            raise ValueError(f"{flag}={need} but the Ray cluster has {available.get(key, 0)} {key}")
    task = ray.remote(num_cpus=cpus, num_gpus=gpus)(_ray_job)
    partials = {job: partial_folder(out, job).resolve() for job in jobs}
    pending = {task.remote(spec, job, max(1, int(cpus)), partials[job]): job for job in jobs}
    start, done = time.perf_counter(), 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(ready[0])
        row = ray.get(ready[0])
        append_run(out, row)
        shutil.rmtree(partials[job], ignore_errors=True)
        done += 1
        _announce(row, done, len(jobs), start)
