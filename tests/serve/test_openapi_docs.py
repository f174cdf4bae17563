"""The OpenAPI document and the page it sits beside; schemathesis against the live server."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_support import AUTH, FASHION, ROOT, TOKEN, make_checkpoint, make_client

from serve.testing import server

ST = Path(sys.executable).with_name("st")  # schemathesis, from the dev extras

CONFIG = ROOT / "tests" / "schemathesis.toml"


def test_openapi_docs_and_page(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    params = {p["name"]: p for p in spec["paths"]["/predict"]["post"]["parameters"]}
    assert set(params) == {"top_k", "attention", "cam"}
    assert params["top_k"]["in"] == "query"
    assert "classes per image" in params["top_k"]["description"]
    assert spec["paths"]["/predict"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    for name in ("PredictResponse", "ModelInfo", "ImagePrediction", "Error"):
        assert name in spec["components"]["schemas"]
    files = body["multipart/form-data"]["schema"]["properties"]["files"]
    assert files["minItems"] == 1 and files["maxItems"] == 16
    assert set(spec["paths"]["/predict"]["post"]["responses"]) >= {
        "200",
        "400",
        "401",
        "408",
        "413",
        "415",
        "422",
        "503",
        "504",
    }
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="file"' in page.text
    assert client.get("/static/app.js").status_code == 200


def test_every_body_limit_a_route_answers_with_is_documented(ckpts) -> None:
    with make_client(ckpts["cbam"], max_body_bytes=1_024, token=TOKEN) as c:
        spec = c.get("/openapi.json").json()["paths"]
        big = {"path": "x" * 2_000}
        for route, answer in (
            ("/reload", c.post("/reload", json=big, headers=AUTH)),
            ("/predict", c.post("/predict", json={"images": ["x" * 2_000]}, headers=AUTH)),
        ):
            assert answer.status_code == 413, answer.text
            assert "413" in spec[route]["post"]["responses"], route


@pytest.mark.slow
@pytest.mark.skipif(
    not ST.exists() and not shutil.which("st"),
    reason="schemathesis is not installed (pip install -e '.[dev]')",
)
@pytest.mark.parametrize("token", [None, "st-token"], ids=["no-token", "token"])
def test_schemathesis_finds_no_failure(tmp_path: Path, token: str | None) -> None:
    runs = tmp_path / "runs"
    make_checkpoint(runs / "exp" / "best", "cbam", FASHION, seed=1)
    env = {"ECAB_SERVE_TOKEN": token or ""}
    with server(runs / "exp", env=env) as url:
        auth = ["-H", f"Authorization: Bearer {token}"] if token else []
        run = subprocess.run(
            [
                str(ST) if ST.exists() else "st",
                "--config-file",
                str(CONFIG),
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "50",
                "--seed",
                "14",
                "--workers",
                "1",
                *auth,
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,  # its cache goes there
        )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "6 selected / 6 total" in run.stdout  # every operation was tested
    cases = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert cases and int(cases[1]) >= 100 and cases[1] == cases[2], run.stdout[-2000:]
    assert not re.search(r"\b\d+ failures?\b", run.stdout)
