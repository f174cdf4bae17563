"""A checkpoint as a self-contained model other runtimes load: ONNX or TorchScript.

The exported graph takes `images`, uint8 N×C×H×W (normalisation inside, so a caller needs no
mean or std), and returns `logits` and, per attention module, its N×C channel weights, named
after the module's path (`stage1.block0.attn`). The batch size is free. Beside the model,
`signature.json` names the input, the outputs and the classes.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ecab_tune import checkpoint
from ecab_tune.data import DataInfo
from ecab_tune.models import AttentionModule
from ecab_tune.models.inference import forward_with_attention

FORMATS = ("onnx", "torchscript")
FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
SIGNATURE = "signature.json"
INPUT, LOGITS = "images", "logits"
# Exported and eager answers must agree this closely on the check batch, or export fails.
TOLERANCE = 1e-4
CHECK_BATCH = 3  # differs from the traced batch (2): a baked-in batch size shows up


class ExportError(ValueError):
    """A model that cannot be exported as asked, in the user's terms."""


class ExportedModel(nn.Module):
    """uint8 images → (logits, channel weights of each attention module), as plain tensors.

    The gates hand their weights to `capture_attention`'s dict while the graph is traced, and
    the traced graph returns them: the dict lives only at trace time, never in the export. The
    normalisation is the one preprocessing, its mean and std traced in as constants.
    """

    def __init__(self, model: nn.Module, data: DataInfo) -> None:
        super().__init__()
        self.model = model
        self.data = data
        self.gate_names = tuple(
            name for name, m in model.named_modules() if isinstance(m, AttentionModule)
        )

    @property
    def output_names(self) -> tuple[str, ...]:
        return (LOGITS, *self.gate_names)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        logits, captured = forward_with_attention(self.model, images, self.data)
        return (logits, *(captured[name]["channel"] for name in self.gate_names))


def signature(wrapper: ExportedModel, data: DataInfo, fmt: str) -> dict[str, Any]:
    """What a caller of the exported file needs: input, outputs (in order) and class names."""
    return {
        "format": fmt,
        "file": FILES[fmt],
        "input": {
            "name": INPUT,
            "dtype": "uint8",
            "shape": ["N", data.channels, data.height, data.width],
        },
        "outputs": [
            {"name": LOGITS, "shape": ["N", len(data.classes)]},
            *(
                {"name": n, "shape": ["N", "C"], "what": "channel weights"}
                for n in wrapper.gate_names
            ),
        ],
        "classes": list(data.classes),
    }


def export_model(folder: str | Path, fmt: str, out: str | Path) -> Path:
    """Export the checkpoint in `folder` as `fmt` into `out`; returns the model file's path.

    Raises `CheckpointError` for a folder that is not a usable checkpoint, and `ExportError`
    when the exporter fails or TorchScript tracing fixed the batch size; either way an earlier
    export in `out` is left as it was. (The tests run the ONNX file against the checkpoint.)
    """
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} is unknown; expected {' or '.join(FORMATS)}")
    model, meta = checkpoint.load_model(folder)
    d = meta.data
    wrapper = ExportedModel(model, d).eval()
    example = torch.randint(
        0,
        256,
        (2, d.channels, d.height, d.width),
        dtype=torch.uint8,
        generator=torch.Generator().manual_seed(0),
    )
    out = Path(out)
    path = out / FILES[fmt]
    sig = signature(wrapper, d, fmt)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if fmt == "onnx":
            checkpoint.write_atomic(path, lambda p: _to_onnx(wrapper, example, p))
        else:
            checkpoint.write_atomic(path, lambda p: _to_torchscript(wrapper, example, p, sig))
        checkpoint.write_atomic(
            out / SIGNATURE, lambda p: p.write_text(json.dumps(sig, indent=2) + "\n")
        )
    except ExportError:
        raise
    except OSError as exc:  # the folder's failure, not the exporter's: permissions, a full disk
        raise ExportError(f"cannot write into {out}: {exc.strerror or exc}") from exc
    except Exception as exc:  # the exporter's own failure (torch raises many kinds), in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ExportError(f"the {fmt} exporter failed: {type(exc).__name__}: {first}") from exc
    return path


def _to_onnx(wrapper: ExportedModel, example: Tensor, path: Path) -> None:
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError as exc:
        raise ExportError(
            "ONNX export needs the onnx and onnxscript packages: pip install -e '.[onnx]'"
        ) from exc
    with warnings.catch_warnings():
        # The gates' writes to the capture dict are the side effect this wrapper relies on.
        warnings.filterwarnings("ignore", message=".*side effects happened.*")
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=True,  # torch.export: `len(tensor)` in the bridge stays symbolic
            input_names=[INPUT],
            output_names=list(wrapper.output_names),
            dynamic_shapes={"images": {0: torch.export.Dim.DYNAMIC}},
            external_data=False,
            verbose=False,
        )


def _to_torchscript(
    wrapper: ExportedModel, example: Tensor, path: Path, sig: dict[str, Any]
) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        _check_free_batch(wrapper, traced, example)
        torch.jit.save(traced, str(path), _extra_files={SIGNATURE: json.dumps(sig)})


def _check_free_batch(wrapper: ExportedModel, traced: nn.Module, example: Tensor) -> None:
    """Tracing records Python ints as constants: a gate that reads `len(x)` fixes the batch."""
    other = example[:1].expand(CHECK_BATCH, *example.shape[1:]).contiguous()
    expected = wrapper(other)
    try:
        got = traced(other)
        ok = all(
            g.shape == e.shape and float((g - e).abs().max()) <= TOLERANCE
            for g, e in zip(got, expected, strict=True)
        )
    except RuntimeError:
        ok = False
    if not ok:
        kinds = sorted({type(wrapper.model.get_submodule(n)).__name__ for n in wrapper.gate_names})
        raise ExportError(
            f"TorchScript tracing fixed the batch size of this model (gates: {', '.join(kinds)} "
            "read a tensor's len()); use --format onnx, which keeps it free"
        )
