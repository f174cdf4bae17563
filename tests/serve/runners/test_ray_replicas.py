"""`python -m serve --ray-replicas N`: the same app as Ray Serve replicas, and its flags."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_support import encode, make_checkpoint

from serve.__main__ import parse_command
from serve.app import create_app
from serve.settings import RayOptions, ServeSettings
from serve.testing import server

TOKEN = "ray-serve-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TOL = 1e-5


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ray-serve") / "ckpt", "cbam", seed=7)


def assert_close(got: Any, want: Any, where: str = "response") -> None:
    """Equal structure and values; floats within TOL (replicas run torch on other threads)."""
    if isinstance(want, float):
        assert got == pytest.approx(want, abs=TOL), where
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{where}[{i}]")
    else:
        assert got == want, where


@pytest.mark.slow
def test_replicas_answer_as_the_app_does(ckpt: Path) -> None:
    from serve.runners.ray_replicas import REPLICA_HEADER  # imports Ray Serve: only when this runs

    image = encode(np.random.default_rng(3).integers(0, 256, (28, 28), dtype=np.uint8))
    files = [("files", ("x.png", image, "image/png"))]
    with TestClient(create_app(ServeSettings(model=str(ckpt), token=TOKEN))) as direct:
        want = direct.post("/predict", files=files, headers=AUTH).json()["predictions"]

    env, args = {"ECAB_SERVE_TOKEN": TOKEN}, ("--ray-replicas", "2")
    # Ray and two replicas start well within 60 s unloaded, but took longer beside a search.
    with (
        server(ckpt, env=env, args=args, timeout=180) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        # The token reached the replicas inside ServeSettings.
        assert http.post("/predict", files=files).status_code == 401
        # /readyz answers once one replica is up; the other may still be loading for a while.
        replicas, deadline = set(), time.monotonic() + 20
        while len(replicas) < 2 and time.monotonic() < deadline:
            r = http.post("/predict", files=files, headers=AUTH)
            assert r.status_code == 200, r.text
            assert_close(r.json()["predictions"], want)
            replicas.add(r.headers[REPLICA_HEADER])
        assert len(replicas) == 2, replicas
        assert http.get("/model", headers=AUTH).json()["path"] == str(ckpt.resolve())
        # A reload would reach one replica: the endpoint says it is unsupported here.
        r = http.post("/reload", headers=AUTH)
        assert r.status_code == 501 and "Ray Serve" in r.json()["detail"]


def test_ray_flags(ckpt: Path) -> None:
    settings, _, ray = parse_command(
        ["--model", str(ckpt), "--ray-replicas", "3", "--ray-address", "ray-head:6379"]
    )
    assert ray == RayOptions(replicas=3, address="ray-head:6379")
    assert settings.host == "127.0.0.1"
    assert parse_command(["--model", str(ckpt)])[2] is None


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--model", "m", "--ray-address", "auto"], "needs --ray-replicas"),
        (["--model", "m", "--ray-replicas", "0"], "must be >= 1"),
        (["--ray-replicas", "2"], "needs --model"),
        (["--model", "m", "--ray-replicas", "2", "--port", "0"], "fixed --port"),
        (["--model", "m", "--ray-replicas", "2", "--device", "cuda:1"], "use --device cuda"),
        (["--model", "m", "--ray-replicas", "2", "--workers", "2"], "--workers is for uvicorn"),
    ],
)
def test_ray_flags_refused_in_flag_terms(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ECAB_SERVE_MODEL", raising=False)
    with pytest.raises(SystemExit):
        parse_command(argv)
    assert words in capsys.readouterr().err


def test_replicas_use_as_many_threads_as_they_reserve(tmp_path) -> None:
    from serve.runners.ray_replicas import application

    app = application(ServeSettings(model=str(tmp_path)), replicas=2)
    deployment = app._bound_deployment
    assert deployment.ray_actor_options["num_cpus"] == 1
    (bound,) = app._bound_deployment.init_args
    assert bound.threads == 1 and bound.inference_threads() == 1


def test_replicas_on_cuda_reserve_a_fraction_of_a_gpu(tmp_path) -> None:
    from serve.runners.ray_replicas import application

    default = application(ServeSettings(model=str(tmp_path), device="cuda"), replicas=4)
    assert default._bound_deployment.ray_actor_options["num_gpus"] == 0.25
    half = application(ServeSettings(model=str(tmp_path), device="cuda", ray_gpus=0.5), 2)
    assert half._bound_deployment.ray_actor_options["num_gpus"] == 0.5
    on_cpu = application(ServeSettings(model=str(tmp_path)), replicas=2)
    assert on_cpu._bound_deployment.ray_actor_options["num_gpus"] == 0
