"""The OpenAPI document matches behaviour: schemathesis, all checks, against the live server."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from serve_support import FASHION, ROOT, make_checkpoint, server

pytestmark = pytest.mark.slow
ST = Path(sys.executable).with_name("st")  # schemathesis, from the dev extras
CONFIG = ROOT / "tests" / "schemathesis.toml"


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
