"""The one training loop and the one evaluation, and one way to build, resume, save and summarise
a run (`make_trainer`, `save_trainer`, `run_metrics`): the CLI trainer, search and study use them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecab_tune import checkpoint
from ecab_tune.config import TrainConfig
from ecab_tune.data import Split, Splits, iterate_batches
from ecab_tune.device import amp_dtype, choose_precision, set_determinism
from ecab_tune.graphed_step import GraphedStep
from ecab_tune.models import ModelConfig
from ecab_tune.reporting.cost import count_params

COMPLETED, DIVERGED, STOPPED = "completed", "diverged", "stopped"


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    images_per_s: float
    seconds: float

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def line(self, epochs: int) -> str:
        return (
            f"epoch {self.epoch:>3}/{epochs}  loss {self.train_loss:.4f}  acc {self.train_acc:6.2%}"
            f"  val_loss {self.val_loss:.4f}  val_acc {self.val_acc:6.2%}  lr {self.lr:.4f}"
            f"  {self.images_per_s:,.0f} img/s  {self.seconds:.1f}s"
        )


@dataclass
class FitResult:
    status: str  # COMPLETED, DIVERGED or STOPPED (the callback asked to stop)
    history: list[EpochResult]


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak LR at optimiser step `step`: linear warm-up, then decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return max(0.0, 1.0 - progress)  # onecycle: triangular, as in the fast CIFAR trainers


class Trainer:
    """Owns model, optimiser and data order; `state_dict` captures all of it for exact resume."""

    def __init__(self, model: nn.Module, splits: Splits, cfg: TrainConfig, device: torch.device):
        set_determinism(cfg.deterministic)  # before the first CUDA kernel
        self.cfg, self.device = cfg, device
        self.precision = choose_precision(device, cfg.precision)
        self.amp_dtype = amp_dtype(self.precision)
        self.splits = splits.to(device)
        self.eval_split: Split = (
            self.splits.val if self.splits.val is not None else self.splits.test
        )
        self.channels_last = cfg.channels_last and device.type == "cuda"
        self.model = model.to(device, memory_format=self._memory_format)
        # The compiled module shares the model's parameters: state_dict and checkpoints stay
        # the model's own. CUDA only, where a ResNet-20 step is launch-bound and fused kernels
        # are the point. On CPU it gained nothing here, and Inductor's CPU backward (torch
        # 2.14.1, AMD EPYC) gave a 1x1 stride-2 conv's weight gradient that changed from call
        # to call (up to 4 % off) and corrupted the heap ("corrupted size vs. prev_size").
        self.compiled = cfg.compile and device.type == "cuda"
        self.forward = torch.compile(self.model) if self.compiled else self.model
        # bf16 has fp32's range, so only fp16 needs loss scaling.
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.cuda_graphs = cfg.cuda_graphs and device.type == "cuda"
        if self.cuda_graphs and self.precision == "fp16":
            # GradScaler skips steps by reading the device; a captured step cannot.
            raise ValueError("cuda_graphs needs fp32 or bf16 precision, not fp16")
        self.graphed: GraphedStep | None = None  # captured at the first step, after any resume
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]  # BN and biases: no L2
        self.optimizer = torch.optim.SGD(
            [
                {"params": decay, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            fused=self.cuda_graphs or None,  # a captured step needs the fused update
        )
        self.steps_per_epoch = len(self.splits.train) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size={cfg.batch_size} exceeds the {len(self.splits.train)} training images"
            )
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.epoch = 0
        self.step = 0
        self.lr = cfg.lr
        self.history: list[EpochResult] = []

    @property
    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def _set_lr(self) -> float:
        self.lr = self.cfg.lr * lr_factor(
            self.step, self.total_steps, self.warmup_steps, self.cfg.schedule
        )
        if self.graphed is not None:
            self.graphed.set_lr(self.lr)
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
        return self.lr

    def _autocast(self) -> torch.autocast:
        # No weight-cast cache: a captured step must recompute its casts on every replay.
        return torch.autocast(
            self.device.type,
            dtype=self.amp_dtype,
            enabled=self.amp_dtype is not None,
            cache_enabled=not self.cuda_graphs,
        )

    def _loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.cfg.label_smoothing)

    def train_step(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """One optimiser step; returns (summed loss, correct count) as device tensors (no sync)."""
        lr = self._set_lr()
        if self.cuda_graphs:
            if self.graphed is None:
                self.graphed = GraphedStep(
                    self.model, self.optimizer, self._loss, images, labels, lr, self._autocast
                )
            self.step += 1
            return self.graphed(images, labels)
        with self._autocast():
            logits = self.forward(images)
            loss = self._loss(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return loss.detach() * len(labels), (logits.argmax(1) == labels).sum()

    def train_epoch(self) -> tuple[float, float, float]:
        """Returns (mean loss, accuracy, images/s) over one pass of the training split."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        start = time.perf_counter()
        for images, labels in iterate_batches(
            self.splits.train,
            self.splits.info,
            self.cfg.batch_size,
            train=True,
            generator=self.generator,
            channels_last=self.channels_last,
        ):
            batch_loss, batch_correct = self.train_step(images, labels)
            loss_sum += batch_loss
            correct += batch_correct
            seen += len(labels)
        loss, acc = loss_sum.item() / seen, correct.item() / seen  # the epoch's only sync
        return loss, acc, seen / (time.perf_counter() - start)

    def evaluate(self, split: Split) -> tuple[float, float]:
        """Mean loss and accuracy of the current model on `split` (no augmentation)."""
        return evaluate(
            self.forward,
            split,
            self.splits.info,
            self.cfg.eval_batch_size,
            amp_dtype=self.amp_dtype,
            channels_last=self.channels_last,
        )

    def fit(self, on_epoch: Callable[[EpochResult], bool | None] | None = None) -> FitResult:
        """Train up to `cfg.epochs`; `on_epoch` may return True to stop early."""
        while self.epoch < self.cfg.epochs:
            start = time.perf_counter()
            train_loss, train_acc, throughput = self.train_epoch()
            val_loss, val_acc = self.evaluate(self.eval_split)
            self.epoch += 1
            result = EpochResult(
                self.epoch,
                train_loss,
                train_acc,
                val_loss,
                val_acc,
                self.lr,
                throughput,
                time.perf_counter() - start,
            )
            self.history.append(result)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                return FitResult(DIVERGED, self.history)
            if on_epoch is not None and on_epoch(result):
                return FitResult(STOPPED, self.history)
        return FitResult(COMPLETED, self.history)

    def state_dict(self) -> dict[str, Any]:
        """Everything beyond the weights that an exact resume needs (loadable weights_only)."""
        optimizer = self.optimizer.state_dict()
        for group in optimizer["param_groups"]:  # a graphed step's LR is a device tensor
            group["lr"] = float(group["lr"])
        return {
            "optimizer": optimizer,
            "scaler": self.scaler.state_dict(),  # {} when disabled (bf16, fp32)
            "precision": self.precision,
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "step": self.step,
            "history": [e.to_dict() for e in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # how this trainer updates, not the saver
            group["fused"] = self.cuda_graphs or None
        self.graphed = None  # new momentum tensors: capture again at the next step
        # A run resumed in another precision (a trial retried on an older GPU, say) starts a
        # fresh loss scale: a disabled scaler saved {}, and fp16's scale means nothing to bf16.
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = [EpochResult(**e) for e in state["history"]]


def evaluate(
    model: nn.Module,
    split: Split,
    info: Any,
    batch_size: int,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on `split`."""
    model.eval()
    device = split.images.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    with (
        torch.inference_mode(),
        torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ),
    ):
        for images, labels in iterate_batches(
            split, info, batch_size, train=False, channels_last=channels_last
        ):
            logits = model(images).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
    return loss_sum.item() / len(split), correct.item() / len(split)


def make_trainer(
    model_cfg: ModelConfig,
    splits: Splits,
    train_cfg: TrainConfig,
    device: torch.device,
    resume_from: str | Path | None = None,
) -> Trainer:
    """A seeded trainer; restored exactly (weights, optimiser, data order) from `resume_from`."""
    if resume_from is not None:
        model, _ = checkpoint.load_model(resume_from)
        state = checkpoint.load_train_state(resume_from)
        if state is None:
            raise checkpoint.CheckpointError(f"{resume_from} has no resume state")
    else:
        model, state = model_cfg.build(seed=train_cfg.seed), None
    trainer = Trainer(model, splits, train_cfg, device)
    if state is not None:
        try:
            trainer.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # foreign or hand-made
            raise checkpoint.CheckpointError(
                f"{resume_from}/{checkpoint.STATE} does not fit its weights and recipe: {exc!r}"
            ) from exc
    return trainer


def run_metrics(trainer: Trainer, fit: FitResult) -> dict[str, Any]:
    """Summary metrics of a run; the test split is evaluated here, once, at the end."""
    last = trainer.history[-1] if trainer.history else None
    test_loss, test_acc = trainer.evaluate(trainer.splits.test)
    return {
        "status": fit.status,
        "epochs": trainer.epoch,
        "val_acc": last.val_acc if last else None,
        "val_loss": last.val_loss if last else None,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "images_per_s": last.images_per_s if last else None,
        "params": count_params(trainer.model),
    }


def save_trainer(
    folder: str | Path,
    trainer: Trainer,
    model_cfg: ModelConfig,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A checkpoint of the trainer's model and everything an exact resume needs."""
    meta = checkpoint.Meta(model_cfg, trainer.splits.info, trainer.cfg, metrics or {}, extra or {})
    return checkpoint.save(folder, trainer.model, meta, trainer.state_dict())
