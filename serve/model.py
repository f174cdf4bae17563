"""The served model: which folder `--model` means, and `ModelHandle`, a checkpoint loaded and
warmed up that answers uint8 batches with predictions and attention weights."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ecab_tune import checkpoint
from ecab_tune.checkpoint import CheckpointError, Meta
from ecab_tune.experiment import EXPORT_DIR
from ecab_tune.models.inference import forward_with_attention
from ecab_tune.reporting.cost import count_params
from serve.bridge_sources import gate_sources, record_shares
from serve.cam import grad_cam


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder as is; an experiment folder → its exported best checkpoint."""
    folder = Path(path).expanduser()
    try:
        if (folder / checkpoint.META).is_file():
            return folder
        if (folder / EXPORT_DIR / checkpoint.META).is_file():
            return folder / EXPORT_DIR
        if not folder.exists():
            raise CheckpointError(f"{folder} does not exist")
        if not folder.is_dir():
            raise CheckpointError(f"{folder} is not a folder (expected a checkpoint folder)")
    except OSError as exc:  # a name too long, a folder we may not read
        raise CheckpointError(f"{folder}: {exc.strerror or exc}") from exc
    raise CheckpointError(
        f"{folder} is neither a checkpoint (no {checkpoint.META}) nor an experiment folder "
        f"with an exported best model ({EXPORT_DIR}/{checkpoint.META})"
    )


@dataclass(frozen=True)
class AttentionModuleInfo:
    name: str
    kind: str
    outputs: tuple[str, ...]
    channels: int
    sources: tuple[str, ...] = ()  # a bridge gate's source layers, in `layer_names`' words


@dataclass(frozen=True)
class Prediction:
    """One image's answer: (class index, probability) best first, its attention maps (and each
    bridge gate's `sources` shares by layer), and its class activation map if asked for."""

    top: list[tuple[int, float]]
    attention: dict[str, dict[str, Any]] | None
    cam: list[list[float]] | None = None


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """A model ready to answer: weights in eval mode, its metadata and what it exposes."""

    model: nn.Module
    meta: Meta
    path: Path
    source: str
    device: torch.device
    attention_modules: tuple[AttentionModuleInfo, ...]
    parameters: int
    loaded_at: float = field(default_factory=time.time)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        d = self.meta.data
        return d.channels, d.height, d.width

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta.data.classes)

    def predict(
        self, images: Tensor, top_k: int, attention: bool, cam: bool = False
    ) -> list[Prediction]:
        """Classify a uint8 N×C×H×W batch exactly as training preprocesses it."""
        # Grad-CAM needs autograd, which inference_mode's tensors refuse; no_grad still skips
        # the graph everywhere but inside `grad_cam`.
        with torch.no_grad() if cam else torch.inference_mode():
            with contextlib.ExitStack() as stack:
                shares = stack.enter_context(record_shares(self.model)) if attention else {}
                cam_of = stack.enter_context(grad_cam(self.model)) if cam else None
                logits, captured = forward_with_attention(
                    self.model, images.to(self.device), self.meta.data, attention
                )
                maps_cam = None if cam_of is None else cam_of(logits)
            probs = torch.softmax(logits.float(), dim=1)
            values, indices = probs.topk(min(top_k, probs.shape[1]), dim=1)
            # One .tolist() per tensor: far cheaper than per-element conversion.
            maps = {
                name: {kind: t.float().cpu().tolist() for kind, t in outputs.items()}
                for name, outputs in captured.items()
            }
            for name, share in shares.items():
                maps[name]["sources"] = [
                    dict(zip(self.sources[name], row, strict=True)) for row in share.cpu().tolist()
                ]
            values_l, indices_l = values.cpu().tolist(), indices.cpu().tolist()
            cams = None if maps_cam is None else maps_cam.cpu().tolist()
        return [
            Prediction(
                top=list(zip(indices_l[i], values_l[i], strict=True)),
                attention={n: {k: v[i] for k, v in m.items()} for n, m in maps.items()}
                if attention
                else None,
                cam=None if cams is None else cams[i],
            )
            for i in range(len(values_l))
        ]

    @property
    def sources(self) -> dict[str, tuple[str, ...]]:
        return {m.name: m.sources for m in self.attention_modules if m.sources}


def load_handle(path: str | Path, device: str = "cpu") -> ModelHandle:
    """Load and warm up a checkpoint; raises `CheckpointError` for anything unusable."""
    folder = resolve_checkpoint(path)
    target = torch.device(device)
    try:
        model, meta = checkpoint.load_model(folder, device=target)
    except CheckpointError:
        raise
    except Exception as exc:  # e.g. a meta.json naming an attention option that does not exist
        raise CheckpointError(
            f"{folder}: {checkpoint.META} describes a model that cannot be built: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    d = meta.data
    if meta.model.num_classes != len(d.classes):
        raise CheckpointError(
            f"{folder}: the model has {meta.model.num_classes} outputs but the data names "
            f"{len(d.classes)} classes"
        )
    # A warm-up forward pass both primes the kernels and lists the attention modules.
    try:
        blank = torch.zeros(1, d.channels, d.height, d.width, dtype=torch.uint8, device=target)
        with torch.inference_mode():
            _, captured = forward_with_attention(model, blank, d)
    except Exception as exc:
        raise CheckpointError(
            f"{folder}: the model does not run on its own input shape: {exc}"
        ) from exc
    sources = gate_sources(model)
    modules = tuple(
        AttentionModuleInfo(
            name=name,
            kind=type(model.get_submodule(name)).__name__,
            outputs=tuple(outputs),
            channels=int(outputs["channel"].shape[1]) if "channel" in outputs else 0,
            sources=sources.get(name, ()),
        )
        for name, outputs in captured.items()
    )
    return ModelHandle(
        model=model,
        meta=meta,
        path=folder.resolve(),
        source=str(path),
        device=target,
        attention_modules=modules,
        parameters=count_params(model),
    )
