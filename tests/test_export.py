"""`python -m ecab_tune.export`: ONNX and TorchScript files that answer as the checkpoint does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from serve_support import ROOT, encode, fashion_test_images, make_checkpoint

from ecab_tune import checkpoint
from ecab_tune.export import SIGNATURE, ExportError, export_model
from ecab_tune.models.inference import forward_with_attention
from serve.app import create_app
from serve.settings import ServeSettings

TOL = 1e-4
# ecab (concat) and bridge (sum) cover both bridge code paths; cbam adds
# a spatial gate, whose channel weights are exported.
ATTENTIONS = {
    "cbam": {},
    "ecab": {"layers": "last2", "fusion": "concat"},
    "bridge": {},
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    return {
        name: make_checkpoint(root / name, name, seed=i, attention_kwargs=kw)
        for i, (name, kw) in enumerate(ATTENTIONS.items())
    }


@pytest.fixture(scope="module")
def fashion() -> torch.Tensor:
    """Five real Fashion-MNIST test images, uint8 5×1×28×28."""
    return torch.from_numpy(np.stack([img for img, _ in fashion_test_images(5)]))[:, None]


def reference(folder: Path, images: torch.Tensor) -> dict[str, np.ndarray]:
    """PyTorch's own answer through the project's preprocessing: logits and channel gates."""
    model, meta = checkpoint.load_model(folder)
    with torch.inference_mode():
        logits, captured = forward_with_attention(model, images, meta.data)
    return {"logits": logits.numpy()} | {n: o["channel"].numpy() for n, o in captured.items()}


def assert_outputs_match(names: list[str], got: list, expected: dict[str, np.ndarray]) -> None:
    assert names == list(expected)  # logits first, then the gates in module order
    for name, value in zip(names, got, strict=True):
        np.testing.assert_allclose(np.asarray(value), expected[name], atol=TOL, err_msg=name)


@pytest.mark.parametrize("attention", ["cbam", "bridge"])
def test_onnx_matches_pytorch_on_fashion_mnist(
    attention: str, ckpts: dict[str, Path], fashion: torch.Tensor, tmp_path: Path
) -> None:
    import onnxruntime as ort

    path = export_model(ckpts[attention], "onnx", tmp_path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [inp] = session.get_inputs()
    assert (inp.name, inp.type) == ("images", "tensor(uint8)")
    assert not isinstance(inp.shape[0], int)  # the batch dimension is free
    names = [o.name for o in session.get_outputs()]
    expected = reference(ckpts[attention], fashion)
    assert len(names) == 4  # logits + one gate per block of resnet8
    assert_outputs_match(names, session.run(None, {"images": fashion.numpy()}), expected)
    # A batch of one, as a different batch size than the one traced.
    one = session.run(None, {"images": fashion[:1].numpy()})
    np.testing.assert_allclose(one[0], expected["logits"][:1], atol=TOL)
    sig = json.loads((tmp_path / SIGNATURE).read_text())
    assert [o["name"] for o in sig["outputs"]] == names
    assert sig["classes"][0] == "T-shirt/top"


def test_onnx_gives_the_servers_probabilities(
    ckpts: dict[str, Path], fashion: torch.Tensor, tmp_path: Path
) -> None:
    import onnxruntime as ort

    path = export_model(ckpts["ecab"], "onnx", tmp_path)
    logits = ort.InferenceSession(str(path)).run(["logits"], {"images": fashion.numpy()})[0]
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    app = create_app(ServeSettings(model=str(ckpts["ecab"])))
    with TestClient(app) as client:
        files = [
            ("files", (f"{i}.png", encode(img[0].numpy()), "image/png"))
            for i, img in enumerate(fashion)
        ]
        r = client.post("/predict?top_k=10&attention=false", files=files)
    assert r.status_code == 200, r.text
    for row, prediction in zip(probs, r.json()["predictions"], strict=True):
        served = {t["index"]: t["probability"] for t in prediction["top"]}
        np.testing.assert_allclose([served[k] for k in range(10)], row, atol=1e-3)


@pytest.mark.parametrize("attention", ["cbam", "ecab", "bridge"])
def test_torchscript_matches_pytorch_on_fashion_mnist(
    attention: str, ckpts: dict[str, Path], fashion: torch.Tensor, tmp_path: Path
) -> None:
    path = export_model(ckpts[attention], "torchscript", tmp_path)
    extra = {SIGNATURE: ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    names = [o["name"] for o in json.loads(extra[SIGNATURE])["outputs"]]
    with torch.inference_mode():
        got = [t.numpy() for t in loaded(fashion)]
    assert_outputs_match(names, got, reference(ckpts[attention], fashion))


def test_a_failed_export_leaves_the_earlier_one_as_it_was(
    ckpts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = export_model(ckpts["cbam"], "torchscript", tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def save_half_then_fail(module, file, **kw):
        Path(file).write_bytes(b"half a model")
        raise RuntimeError("disk full\nmore detail")

    monkeypatch.setattr(torch.jit, "save", save_half_then_fail)
    failed = r"the torchscript exporter failed: RuntimeError: disk full$"  # its first line
    with pytest.raises(ExportError, match=failed):
        export_model(ckpts["bridge"], "torchscript", tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary left
    assert path.name in before


def test_a_folder_that_cannot_be_written_is_named_not_blamed_on_the_exporter(
    ckpts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(module, file, **kw):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(torch.jit, "save", refused)
    words = f"cannot write into {tmp_path}: Permission denied"
    with pytest.raises(ExportError, match=f"^{re.escape(words)}$"):
        export_model(ckpts["cbam"], "torchscript", tmp_path)
    assert not any(tmp_path.iterdir())


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_cli_torchscript_runs_without_onnx_installed(
    ckpts: dict[str, Path], tmp_path: Path
) -> None:
    # Import hooks that make onnx, onnxscript and onnxruntime unimportable, then the CLI.
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\nfor name in ('onnx', 'onnxscript', 'onnxruntime'):\n"
        "    sys.modules[name] = None\n"
    )
    pythonpath = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", str(ROOT))])
    out = tmp_path / "ts"
    r = run_cli(
        "-m",
        "ecab_tune.export",
        str(ckpts["cbam"]),
        "--format",
        "torchscript",
        "--out",
        str(out),
        env={"PYTHONPATH": pythonpath},
    )
    assert r.returncode == 0, r.stderr
    assert "model.pt" in r.stdout
    assert zipfile.is_zipfile(out / "model.pt")
    # ... and ONNX without them says what to install.
    r = run_cli(
        "-m",
        "ecab_tune.export",
        str(ckpts["cbam"]),
        "--format",
        "onnx",
        "--out",
        str(out),
        env={"PYTHONPATH": pythonpath},
    )
    assert r.returncode == 2
    assert "pip install" in r.stderr


def test_cli_says_in_one_line_that_a_folder_is_not_a_checkpoint(tmp_path: Path) -> None:
    r = run_cli(
        "-m", "ecab_tune.export", str(tmp_path), "--format", "onnx", "--out", str(tmp_path / "out")
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert "is not a checkpoint" in r.stderr and str(tmp_path) in r.stderr
    assert not (tmp_path / "out").exists()
