"""The CUDA path: marked `cuda`, skipped (with the reason) where no GPU is usable.

`scripts/gpu_check.sh` runs these first on a machine with a GPU.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch
from synthetic import make_splits

from ecab_tune import checkpoint
from ecab_tune.config import TrainConfig
from ecab_tune.device import cuda_problem
from ecab_tune.engine import make_trainer, save_trainer
from ecab_tune.models import ModelConfig, capture_attention, create_model
from ecab_tune.study.spec import load_spec

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason=f"needs CUDA: {'' if torch.cuda.is_available() else cuda_problem()}",
    ),
]
CUDA = torch.device("cuda")
TINY = ModelConfig("resnet8", "ecab", {"layers": "last2"}, width=0.5, num_classes=4, in_chans=1)


def trainer(epochs: int = 2, precision: str = "auto", model: ModelConfig = TINY, **kw):
    cfg = TrainConfig(epochs=epochs, batch_size=32, lr=0.05, warmup_epochs=0.5,
                      precision=precision, **kw)  # fmt: skip
    return make_trainer(model, make_splits(), cfg, CUDA)


def native_bf16() -> bool:
    return torch.cuda.get_device_capability() >= (8, 0)


def test_fit_with_auto_precision_and_channels_last_learns():
    t = trainer(epochs=3)
    assert t.precision == ("bf16" if native_bf16() else "fp16") and t.channels_last
    fit = t.fit()
    assert fit.status == "completed"
    assert fit.history[-1].train_loss < fit.history[0].train_loss
    assert next(t.model.parameters()).device.type == "cuda"


def test_fp16_trains_with_a_grad_scaler():
    t = trainer(precision="fp16")
    assert t.scaler.is_enabled()
    fit = t.fit()
    assert fit.status == "completed" and t.scaler.get_scale() > 0


def test_checkpoint_saved_on_cuda_loads_on_cpu_and_back(tmp_path):
    t = trainer(epochs=1)
    t.fit()
    save_trainer(tmp_path, t, TINY)
    x = torch.randn(4, 1, 16, 16)
    on_cpu, _ = checkpoint.load_model(tmp_path, "cpu")
    on_gpu, _ = checkpoint.load_model(tmp_path, "cuda")
    with torch.inference_mode():
        torch.testing.assert_close(on_gpu(x.cuda()).cpu(), on_cpu(x), rtol=1e-3, atol=1e-3)


def test_resume_on_cuda_is_exact_with_deterministic_kernels(tmp_path):
    straight = trainer(epochs=2, precision="fp32", deterministic=True)
    straight.fit()
    first = trainer(epochs=2, precision="fp32", deterministic=True)
    first.fit(lambda result: True)  # stop after epoch 1
    save_trainer(tmp_path, first, TINY)
    cfg = dataclasses.replace(first.cfg)
    resumed = make_trainer(TINY, make_splits(), cfg, CUDA, resume_from=tmp_path)
    resumed.fit()
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("before,after", [("bf16", "fp16"), ("fp16", "bf16"), ("fp32", "fp16")])
def test_resume_across_precisions(tmp_path, before, after):
    if "bf16" in (before, after) and not native_bf16():
        pytest.skip("this card has no native bf16")
    first = trainer(epochs=2, precision=before)
    first.fit(lambda result: True)
    save_trainer(tmp_path, first, TINY)
    cfg = dataclasses.replace(first.cfg, precision=after)
    resumed = make_trainer(TINY, make_splits(), cfg, CUDA, resume_from=tmp_path)
    assert resumed.precision == after
    assert resumed.fit().status == "completed"


STUDY_ARMS = load_spec(Path(__file__).parents[1] / "studies" / "fmnist-resnet20.yaml").all_arms()


@pytest.mark.parametrize("arm", STUDY_ARMS.values(), ids=list(STUDY_ARMS))
def test_a_graphed_step_trains_as_the_eager_step_does(arm):
    # Every arm the study trains. Warm-up undone (BatchNorm counts equal exactly), the LR
    # schedule followed (it changes every step of the half-epoch warm-up), the fused update
    # equal to the foreach one.
    model = ModelConfig("resnet8", arm.attention, arm.options, width=0.5, num_classes=4, in_chans=1)
    eager, graphed = (
        trainer(precision="fp32", deterministic=True, cuda_graphs=on, model=model)
        for on in (False, True)
    )
    fits = eager.fit(), graphed.fit()
    assert eager.graphed is None and graphed.graphed is not None
    states = (t.model.state_dict().values() for t in (eager, graphed))
    for a, b in zip(*states, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    for a, b in zip(*(f.history for f in fits), strict=True):
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-4) and b.lr == a.lr


def test_a_graphed_run_resumes_where_it_stopped(tmp_path):
    straight = trainer(precision="fp32", deterministic=True, cuda_graphs=True)
    straight.fit()
    first = trainer(precision="fp32", deterministic=True, cuda_graphs=True)
    first.fit(lambda result: True)  # stop after epoch 1
    save_trainer(tmp_path, first, TINY)
    resumed = make_trainer(TINY, make_splits(), first.cfg, CUDA, resume_from=tmp_path)
    resumed.fit()
    states = (t.model.state_dict().values() for t in (straight, resumed))
    for a, b in zip(*states, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_graphed_steps_learn_in_bf16_and_refuse_fp16():
    if native_bf16():
        t = trainer(epochs=3, precision="bf16", cuda_graphs=True)
        fit = t.fit()
        assert t.graphed is not None and fit.history[-1].train_loss < fit.history[0].train_loss
    with pytest.raises(ValueError, match="cuda_graphs needs fp32 or bf16"):
        trainer(precision="fp16", cuda_graphs=True)


def test_fused_bridge_gates_match_between_cuda_and_cpu():
    model = create_model("resnet20", "ecab", layers="all", seed=1).eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.inference_mode(), capture_attention(model) as on_cpu:
        model(x)
    on_cpu = {k: v["channel"].clone() for k, v in on_cpu.items()}
    model.cuda()
    with torch.inference_mode(), capture_attention(model) as on_gpu:
        model(x.cuda())
    for name, weights in on_cpu.items():
        torch.testing.assert_close(on_gpu[name]["channel"].cpu(), weights, rtol=1e-3, atol=1e-4)


def test_a_study_run_trains_on_the_gpu_and_says_so():
    from ecab_tune.config import DataConfig
    from ecab_tune.study.runner import run_job
    from ecab_tune.study.spec import Arm, Job, StudySpec

    spec = StudySpec(
        name="cuda", model="resnet8", width=0.25,
        data=DataConfig(dataset="fashion-mnist", subset=600, val_fraction=0.2),
        train=TrainConfig(epochs=1, batch_size=64, warmup_epochs=0.5),
        seeds=1, baseline="none", focus="ecab",
        arms={"none": Arm("none"), "ecab": Arm("ecab")},
    )  # fmt: skip
    row = run_job(spec, Job("ecab", 0, 1, "main"), "cuda", 2)
    assert row["device"] == torch.cuda.get_device_name() and row["status"] == "completed"
    assert row["precision"] == ("bf16" if native_bf16() else "fp16")


def test_study_runs_as_threads_on_their_own_streams_train_as_runs_alone(tmp_path):
    from ecab_tune.config import DataConfig
    from ecab_tune.study.runner import run_job, run_local
    from ecab_tune.study.runs import read_runs
    from ecab_tune.study.spec import Arm, Job, StudySpec

    spec = StudySpec(
        name="streams", model="resnet8", width=0.25,
        data=DataConfig(dataset="fashion-mnist", subset=600, val_fraction=0.2),
        train=TrainConfig(epochs=2, batch_size=64, warmup_epochs=0.5, precision="fp32",
                          deterministic=True, cuda_graphs=True),
        seeds=1, baseline="none", focus="ecab",
        arms={"none": Arm("none"), "ecab": Arm("ecab"), "se": Arm("se")},
    )  # fmt: skip
    jobs = [Job(arm, 0, 2, "main") for arm in spec.arms]
    alone = {job.arm: run_job(spec, job, "cuda", 2) for job in jobs}
    run_local(spec, jobs, tmp_path / "out", len(jobs), "cuda", streams=True)
    together = {row["arm"]: row for row in read_runs(tmp_path / "out")}
    assert set(together) == set(alone) and all(r["cuda_graphs"] for r in together.values())
    for arm, row in alone.items():  # a run that saw another's batches would be far off
        assert together[arm]["init_hash"] == row["init_hash"], arm  # built alike in threads
        assert together[arm]["val_acc"] == pytest.approx(row["val_acc"], abs=2e-3), arm
        assert together[arm]["test_acc_curve"] == pytest.approx(row["test_acc_curve"], abs=2e-3)


@pytest.mark.skipif(importlib.util.find_spec("fastapi") is None, reason="serve not installed")
def test_serve_on_cuda_returns_predictions_and_attention(tmp_path):
    import httpx
    import numpy as np
    from serve_support import encode, make_checkpoint

    from serve.testing import server

    folder = make_checkpoint(tmp_path / "m", attention="ecab")
    image = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    with server(folder, args=("--device", "cuda")) as url:
        files = {"files": ("a.png", encode(image), "image/png")}
        reply = httpx.post(f"{url}/predict", files=files, timeout=30)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["predictions"][0]["attention"]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed")
def test_a_ray_task_at_a_quarter_gpu_sees_one_device_and_one_without_stays_on_cpu():
    import ray

    def where() -> tuple[list, str]:
        from ecab_tune.device import ray_task_device

        return ray.get_gpu_ids(), str(ray_task_device())

    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False)
    try:
        gpu_ids, device = ray.get(ray.remote(num_gpus=0.25)(where).remote())
        assert len(gpu_ids) == 1 and device.startswith("cuda")
        gpu_ids, device = ray.get(ray.remote(num_gpus=0)(where).remote())
        assert gpu_ids == [] and device == "cpu"
    finally:
        ray.shutdown()


def test_compiled_training_matches_eager(monkeypatch):
    # The same function, compared in full fp32: with TF32 convolutions (PyTorch's default) the
    # two were up to 3e-4 apart after two steps on an H100 (fused kernels round differently).
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    eager, compiled = trainer(1, "fp32"), trainer(1, "fp32", compile=True)
    assert compiled.compiled and compiled.forward is not compiled.model
    batch = next(iter(make_splits().train.images.split(32)))
    images = ((batch.float() / 255 - 0.3) / 0.3).to(CUDA)
    labels = (torch.arange(32) % 4).to(CUDA)
    for _ in range(2):
        loss_e, _ = eager.train_step(images, labels)
        loss_c, _ = compiled.train_step(images, labels)
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-4)
    for a, b in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        compiled.evaluate(compiled.splits.test),
        eager.evaluate(eager.splits.test),
        rtol=1e-4,
        atol=1e-4,
    )
