"""docker-compose.yml: Compose accepts it, and every service runs a command this project has."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from serve_support import ROOT

from ecab_tune.config import from_args
from ecab_tune.search import SearchConfig, load_space
from ecab_tune.search.__main__ import build_parser as search_parser
from serve.__main__ import parse_command

COMPOSE = ROOT / "docker-compose.yml"
ENV = {"RAY_AUTH_TOKEN": "compose-test-token"}  # required by the file; everything else defaults
BIND_DEFAULT = "${BIND:-127.0.0.1}:"
SEARCH, SERVE = ["python", "-m", "ecab_tune.search"], ["python", "-m", "serve"]
VARIABLE = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str] = ENV) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` against `env`."""

    def value(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if env.get(name):
            return env[name]
        if op == "?":
            raise AssertionError(f"{name} must be set: {arg}")
        return arg if op == "-" else ""

    return VARIABLE.sub(value, text)


def argv_of(command: str | list[str]) -> list[str]:
    if isinstance(command, str):
        return shlex.split(interpolate(command))
    return [interpolate(part) for part in command]


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text())["services"]  # safe_load resolves `<<` merges


def compose_cli() -> list[str] | None:
    """`docker compose` (v2 plugin) if it answers, else Debian's docker-compose (v1)."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    v1 = shutil.which("docker-compose")
    return [v1] if v1 else None


def test_compose_accepts_the_file(tmp_path: Path) -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` (v2) nor docker-compose (v1) is installed")
    path = COMPOSE
    if cli[-1].endswith("docker-compose"):
        # v1 predates the Compose spec's top-level `name:`; -p names the project instead.
        path = tmp_path / COMPOSE.name
        path.write_text(re.sub(r"(?m)^name:.*\n", "", COMPOSE.read_text()))
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}

    def config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        argv = [*cli, "-f", str(path), "-p", "ecab_tune", "config", "--quiet"]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    ok = config({**base, **ENV})
    assert ok.returncode == 0, ok.stderr
    no_token = config(base)  # token auth cannot be left off by forgetting the token
    assert no_token.returncode != 0 and "RAY_AUTH_TOKEN" in no_token.stderr


def test_every_command_is_one_the_project_has(services: dict[str, dict[str, Any]]) -> None:
    from ray.scripts.scripts import start  # Ray's own CLI parser: flags Ray 2.x really has

    for name, service in services.items():
        argv = argv_of(service["command"])
        try:
            if argv[:3] == SEARCH:
                load_space(from_args(SearchConfig, search_parser().parse_args(argv[3:])).space)
            elif argv[:3] == SERVE:
                parse_command(argv[3:])
            elif argv[:2] == ["ray", "start"]:
                params = start.make_context("ray start", argv[2:]).params
                assert params["head"] or params["address"], f"{name}: --head or --address"
                assert params["block"], f"{name}: without --block the container exits at once"
            else:
                pytest.fail(f"{name}: {argv} is no command of this project")
        except SystemExit:
            pytest.fail(f"{name}: its parser refuses {argv} (see stderr)")


def test_ports_bind_loopback_unless_told(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith(BIND_DEFAULT), f"{name}: {port} must start with {BIND_DEFAULT}"


def test_ray_token_auth_everywhere(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        env = service["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        assert env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?"), f"{name}: no default token"


def test_healthchecks_where_something_waits_or_serves(services: dict[str, dict[str, Any]]) -> None:
    awaited = {
        dep
        for service in services.values()
        for dep, cond in service.get("depends_on", {}).items()
        if cond.get("condition") == "service_healthy"
    }
    serving = {n for n, s in services.items() if argv_of(s["command"])[:3] == SERVE}
    assert {"ray-head", "api", "api-ray"} <= awaited | serving
    for name in awaited | serving:
        assert services[name].get("healthcheck", {}).get("test"), f"{name}: no healthcheck"


def test_api_ports_line_up(services: dict[str, dict[str, Any]]) -> None:
    """What the healthcheck asks and the host publishes is where the server listens."""
    for name, service in services.items():
        argv = argv_of(service["command"])
        if argv[:3] != SERVE:
            continue
        settings, _, ray = parse_command(argv[3:])
        assert settings.host == "0.0.0.0", f"{name}: a published port needs --host 0.0.0.0"
        # Ray Serve's one proxy runs on the head node (proxy_location HeadOnly).
        publisher = "ray-head" if ray is not None else name
        published = {p.rsplit(":", 1)[-1].split("/")[0] for p in services[publisher]["ports"]}
        assert str(settings.port) in published, f"{publisher} does not publish {settings.port}"
        probe = " ".join(service["healthcheck"]["test"])
        host = "ray-head" if ray is not None else "127.0.0.1"
        assert f"http://{host}:{settings.port}/" in probe, f"{name}: healthcheck asks {probe}"


def test_each_gpu_and_core_is_advertised_once(services: dict[str, dict[str, Any]]) -> None:
    from ray.scripts.scripts import start

    def params(name: str) -> dict[str, Any]:
        return start.make_context("ray start", argv_of(services[name]["command"])[2:]).params

    head, worker = params("ray-head"), params("ray-worker")
    assert head["num_gpus"] == 0 and head["num_cpus"], "the head schedules no GPU trial"
    assert worker["num_cpus"], "an explicit core count: not every core of a shared host"
    # One worker per host takes all its GPUs; a second copy on the host would re-advertise them.
    deploy = services["ray-worker"]["deploy"]
    assert deploy["replicas"] == 1
    (device,) = deploy["resources"]["reservations"]["devices"]
    assert device["count"] == "all" and worker["num_gpus"] is None  # Ray counts what it sees
    for name, service in services.items():
        if name != "ray-worker":
            assert "deploy" not in service, f"{name} must not reserve GPUs"
