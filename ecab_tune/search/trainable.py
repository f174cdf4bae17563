"""The Ray Tune trial: a thin adapter from a sampled config to the shared single-run trainer."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import ray
import torch
from ray import tune

from ecab_tune.data import Splits
from ecab_tune.device import device_name, ray_task_device
from ecab_tune.engine import DIVERGED, EpochResult, make_trainer, save_trainer
from ecab_tune.reporting.cost import count_macs, count_params, latency_ms
from ecab_tune.search.space import SearchSpace


@dataclass(frozen=True)
class TrialSpec:
    """What every trial of one search shares; the sampled params arrive as Tune's config."""

    space: SearchSpace
    max_epochs: int
    seed: int
    experiment_dir: str
    verbose: bool = False  # keep Ray's per-checkpoint log lines


# Ray logs every saved checkpoint of every trial to the driver's terminal; the progress lines
# already say what each trial did.
CHECKPOINT_LOGGER = "ray.train._internal.storage"


def run_trial(config: dict[str, Any], *, spec: TrialSpec, data: Splits) -> None:
    if not spec.verbose:
        logging.getLogger(CHECKPOINT_LOGGER).setLevel(logging.WARNING)
    context = tune.get_context()
    cpus = context.get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    info = data.info
    model_cfg, train_cfg = spec.space.resolve(
        config,
        num_classes=len(info.classes),
        in_chans=info.channels,
        epochs=spec.max_epochs,
        seed=spec.seed,
    )
    device = ray_task_device()  # exactly what Ray assigned: its GPU, or the CPU
    resumed = tune.get_checkpoint()
    with resumed.as_directory() if resumed else contextlib.nullcontext() as resume_dir:
        trainer = make_trainer(model_cfg, data, train_cfg, device, resume_dir)
    num_params = count_params(trainer.model)
    input_shape = (info.channels, info.height, info.width)
    macs = count_macs(trainer.model, input_shape)
    # Once per trial, before training: a cost objective, as the trial's device serves batch-1.
    latency = latency_ms(trainer.model, input_shape)

    fit_started_at = time.time()  # wall clock, to measure scheduling overhead per trial
    # Which cluster node ran each epoch: for monitoring, and to see failover in the results.
    node_id = ray.get_runtime_context().get_node_id()

    def report(result: EpochResult, *, diverged: bool = False, checkpoint: bool = True) -> None:
        metrics = {
            **result.to_dict(),
            "num_params": num_params,
            "macs": macs,
            "latency_ms": latency,
            "diverged": diverged,
            "fit_started_at": fit_started_at,
            "node_id": node_id,
            "device": device_name(device),
            "precision": trainer.precision,
        }
        if not checkpoint:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            save_trainer(folder, trainer, model_cfg, metrics, extra={"params": config})
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    fit = trainer.fit(report)
    if fit.status == DIVERGED:
        report(fit.history[-1], diverged=True, checkpoint=False)
