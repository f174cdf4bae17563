"""Where and in which precision a run computes: device choice, AMP dtype, determinism.

The CUDA queries go through `cuda_capability` and `cuda_problem`, so tests can stub a card.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


class DeviceError(ValueError):
    """A device or precision that this machine cannot give."""


def cuda_problem() -> str:
    """Why CUDA is unusable here, in words a user can act on."""
    if torch.version.cuda is None:
        return "this PyTorch build has no CUDA support (a CPU-only wheel)"
    try:
        torch.cuda.init()
    except Exception as exc:  # the driver's own message: too old, missing, or no device
        return (
            f"CUDA failed to start: {str(exc).splitlines()[0]} (this PyTorch is built for "
            f"CUDA {torch.version.cuda}; the NVIDIA driver must support that version)"
        )
    return "no CUDA device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto`: CUDA when usable, else CPU. Asking for CUDA without it is an error naming why."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise DeviceError(f"device {spec!r} is invalid: expected auto, cpu, cuda, cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} requested but CUDA is unusable: {cuda_problem()}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif device.type != "cpu":
        raise DeviceError(f"device {spec!r} is not supported: expected auto, cpu, cuda or cuda:N")
    return device


def ray_task_device() -> torch.device:
    """Inside a Ray task or trial: the GPU Ray assigned it (Ray narrows CUDA_VISIBLE_DEVICES to
    it), else the CPU, even where GPUs are visible: a GPU nobody reserved is another task's."""
    import ray

    if not ray.get_gpu_ids():
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"Ray assigned a GPU but CUDA is unusable here: {cuda_problem()}")
    return torch.device("cuda")


def device_name(device: torch.device) -> str:
    """What a run reports it trained on: the card's name, or "cpu"."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def cpu_name() -> str:
    """The host CPU's model (a CPU run's speed and its kernels' rounding depend on it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cuda_capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


def choose_precision(device: torch.device, requested: str = "auto") -> str:
    """The precision a run uses: `auto` is bf16 where the card computes it natively (compute
    capability 8.0+: Ampere and later), fp16 with loss scaling on older cards, fp32 on CPU.

    `torch.cuda.is_bf16_supported()` is no guide: it is true on sm_75 through emulation, where
    cuDNN has no bf16 convolutions.
    """
    if requested not in PRECISIONS:
        raise DeviceError(f"precision={requested!r} is invalid: expected {', '.join(PRECISIONS)}")
    native_bf16 = device.type == "cuda" and cuda_capability(device) >= (8, 0)
    if requested == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if native_bf16 else "fp16"
    if requested == "fp16" and device.type != "cuda":
        raise DeviceError("precision=fp16 needs CUDA (on CPU use bf16 or fp32)")
    if requested == "bf16" and device.type == "cuda" and not native_bf16:
        major, minor = cuda_capability(device)
        raise DeviceError(
            f"precision=bf16 needs compute capability 8.0+, this card has {major}.{minor}: "
            "use fp16 or auto"
        )
    return requested


def amp_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision; None for fp32 (no autocast)."""
    return _DTYPES[precision]


def set_determinism(deterministic: bool) -> None:
    """Bit-exact kernels (slower) or the fastest ones cuDNN finds (`benchmark`)."""
    if deterministic:
        # cuBLAS reads this when it creates its handle: set before the first matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
