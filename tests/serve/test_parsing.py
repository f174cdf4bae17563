"""The query and the bearer token: unknown or bad values refused, the token checked first."""

from __future__ import annotations

from fastapi.testclient import TestClient
from serve_support import (
    AUTH,
    assert_error,
    assert_still_serving,
    make_client,
    noise_png,
    post_files,
)


def test_predict_query_values(client: TestClient) -> None:
    png = noise_png()
    assert len(post_files(client, [png], "?top_k=3").json()["predictions"][0]["top"]) == 3
    assert len(post_files(client, [png], "?top_k=10").json()["predictions"][0]["top"]) == 10
    r = post_files(client, [png], "?attention=false")
    assert r.status_code == 200 and r.json()["predictions"][0]["attention"] is None
    assert_error(post_files(client, [png], "?top_k=11"), 422, "top_k=11", "10 classes")
    assert_error(post_files(client, [png], "?top_k=0"), 422, "top_k", "greater than or equal to 1")
    assert_error(post_files(client, [png], "?top_k=abc"), 422, "top_k", "integer", "abc")
    assert_error(post_files(client, [png], "?attention=maybe"), 422, "attention", "maybe")
    assert_error(post_files(client, [png], "?topk=3"), 422, "unknown query parameter", "topk")
    assert_still_serving(client)


def test_bearer_token_protects_predict(client: TestClient) -> None:
    assert_error(post_files(client, [noise_png()], headers={}), 401, "missing bearer token")
    r = post_files(client, [noise_png()], headers={"Authorization": "Bearer wrong"})
    assert_error(r, 401, "wrong bearer token")
    assert r.headers["www-authenticate"] == "Bearer"
    assert post_files(client, [noise_png()]).status_code == 200
    # Health, readiness, the description and the page stay open.
    for path in ("/healthz", "/readyz", "/model", "/"):
        assert client.get(path).status_code == 200


def test_predict_is_open_without_a_token(ckpts) -> None:
    with make_client(ckpts["cbam"]) as c:
        assert post_files(c, [noise_png()], headers={}).status_code == 200


def test_reload_refused_without_configured_token(ckpts) -> None:
    with make_client(ckpts["cbam"]) as c:
        assert_error(c.post("/reload", headers=AUTH), 403, "ECAB_SERVE_TOKEN")


def test_reload_needs_the_token(client: TestClient, ckpts) -> None:
    assert_error(client.post("/reload"), 401, "missing bearer token")
    r = client.post(
        "/reload", json={"path": str(ckpts["ecab"])}, headers={"Authorization": "Bearer nope"}
    )
    assert_error(r, 401, "wrong")
    assert client.get("/model").json()["attention"] == "cbam"


def test_reload_checks_the_token_before_the_body(client: TestClient, ckpts) -> None:
    bad = {"Content-Type": "application/json"}
    assert_error(client.post("/reload", content=b"{nope", headers=bad), 401, "missing")
    r = client.post("/reload", content=b"{nope", headers={**bad, "Authorization": "Bearer x"})
    assert_error(r, 401, "wrong")
    assert_error(client.post("/reload?force=1"), 401, "missing")
    with make_client(ckpts["cbam"]) as c:  # no token configured: 403, whatever the body
        assert_error(c.post("/reload", content=b"{nope", headers=bad), 403, "ECAB_SERVE_TOKEN")
