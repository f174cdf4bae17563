"""Joining a cluster, checked without one: what the join makes of an address before Ray does."""

from __future__ import annotations

import socket

import pytest

from ecab_tune.cluster import ClusterJoinError, join_cluster


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # free once closed: nothing answers there


def test_address_auto_follows_ray_address_to_a_ray_client_url(tmp_path, monkeypatch):
    # ray.init("auto") connects to RAY_ADDRESS, a ray:// one through the client; the join
    # must probe that client port, not refuse "auto" as "not a Ray address".
    port = closed_port()
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{port}")
    with pytest.raises(ClusterJoinError) as failed:
        join_cluster("auto")
    message = str(failed.value)
    assert "\n" not in message, message
    assert f"the Ray cluster at auto (RAY_ADDRESS=ray://127.0.0.1:{port})" in message, message
    assert f"nothing answers at 127.0.0.1:{port}" in message, message
    assert "client port is 10001" in message, message
