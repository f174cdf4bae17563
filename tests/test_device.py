"""Device and precision choice, with the CUDA queries stubbed so every card is testable here."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from synthetic import make_splits

from ecab_tune import device as dev
from ecab_tune.config import TrainConfig
from ecab_tune.engine import Trainer
from ecab_tune.models import ModelConfig

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.fixture
def card(monkeypatch):
    """Pretend a CUDA card of the given compute capability is present."""

    def install(capability: tuple[int, int]) -> None:
        monkeypatch.setattr(dev, "cuda_capability", lambda device: capability)

    return install


@pytest.mark.parametrize(
    "capability,expected",
    [((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"), ((8, 6), "bf16"), ((9, 0), "bf16")],
)
def test_auto_precision_is_bf16_only_where_the_card_has_it_natively(card, capability, expected):
    card(capability)  # sm_75 (T4, RTX 20xx): is_bf16_supported() says yes, cuDNN says no
    assert dev.choose_precision(CUDA, "auto") == expected
    assert dev.choose_precision(CPU, "auto") == "fp32"


def test_explicit_precisions_are_checked_against_the_card(card):
    card((7, 5))
    with pytest.raises(dev.DeviceError, match=r"bf16 needs compute capability 8.0\+.*7.5"):
        dev.choose_precision(CUDA, "bf16")
    assert dev.choose_precision(CUDA, "fp16") == "fp16"
    assert dev.choose_precision(CUDA, "fp32") == "fp32"
    with pytest.raises(dev.DeviceError, match="fp16 needs CUDA"):
        dev.choose_precision(CPU, "fp16")
    assert dev.choose_precision(CPU, "bf16") == "bf16"  # CPU autocast (about 15 % faster here)
    with pytest.raises(dev.DeviceError, match="precision='fp8' is invalid"):
        dev.choose_precision(CPU, "fp8")


def test_cuda_without_a_usable_driver_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "cuda_problem", lambda: "CUDA failed to start: driver too old")
    with pytest.raises(dev.DeviceError, match="CUDA is unusable: CUDA failed to start"):
        dev.resolve_device("cuda")
    assert dev.resolve_device("auto") == CPU
    with pytest.raises(dev.DeviceError, match="expected auto, cpu, cuda"):
        dev.resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize(
    "argv",
    [
        ["ecab_tune.train", "--device", "cuda", "--subset", "100"],
        ["ecab_tune.compare", "studies/fmnist-resnet20.yaml", "--device", "cuda", "--out", "X"],
        ["serve", "--device", "cuda", "--port", "0"],  # would serve, not ready, were it let
    ],
)
def test_clis_refuse_cuda_without_it_in_one_line(argv, tmp_path):
    argv = [a.replace("X", str(tmp_path / "out")) for a in argv]
    done = subprocess.run(
        [sys.executable, "-m", *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "CUDA is unusable" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_resume_into_an_enabled_scaler_from_a_run_without_one():
    # A bf16 or CPU run saves the disabled scaler's {}; resuming it under fp16 (a trial retried
    # on an older GPU) must start a fresh loss scale instead of failing to load {}.
    model = ModelConfig("resnet8", "se", {}, width=0.25, num_classes=4, in_chans=1).build()
    trainer = Trainer(model, make_splits(), TrainConfig(epochs=1, batch_size=32), CPU)
    state = trainer.state_dict()
    assert state["scaler"] == {} and state["precision"] == "fp32"
    trainer.scaler = torch.amp.GradScaler("cpu", enabled=True)
    trainer.load_state_dict(state)
    assert trainer.scaler.get_scale() == torch.amp.GradScaler("cpu").get_scale()


def test_deterministic_flag_sets_the_cudnn_and_cublas_switches(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        dev.set_determinism(True)
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled()
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        dev.set_determinism(False)
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()


def test_a_ray_task_without_a_gpu_trains_on_the_cpu(monkeypatch):
    import ray

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # GPUs visible, none reserved
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    assert dev.ray_task_device() == CPU
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])
    assert dev.ray_task_device() == CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "cuda_problem", lambda: "driver too old")
    with pytest.raises(dev.DeviceError, match="Ray assigned a GPU but CUDA is unusable"):
        dev.ray_task_device()


def test_cuda_request_without_cuda_is_an_error_not_a_fallback():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is unusable"):
        dev.resolve_device("cuda")
    assert dev.resolve_device("auto").type == "cpu"
