"""Request bodies: the size limit, multipart and JSON uploads, and what is refused in them."""

from __future__ import annotations

import base64
import logging

import pytest
from fastapi.testclient import TestClient
from serve_support import (
    AUTH,
    assert_error,
    assert_still_serving,
    make_client,
    noise_png,
    post_files,
)

from serve import uploads


def test_oversized_body(ckpts) -> None:
    with make_client(ckpts["cbam"], max_body_bytes=50_000) as c:
        big = noise_png(4, shape=(300, 300))
        assert len(big) > 50_000
        assert_error(post_files(c, [big]), 413, "the limit is 50,000")  # by Content-Length
        # No Content-Length (chunked): enforced while reading.
        chunks = iter([b"x" * 20_000] * 5)
        r = c.post("/predict", content=chunks, headers={"Content-Type": "application/json"})
        assert "content-length" not in {k.lower() for k in r.request.headers}
        assert_error(r, 413, "exceeds the limit of 50,000 bytes")
        assert post_files(c, [noise_png()]).status_code == 200


def test_a_page_is_served_whatever_body_its_get_carries(ckpts) -> None:
    # A file response reads the request while it sends, to notice a disconnect: the body
    # limits refused there broke the response half-way, with a traceback in the log.
    with make_client(ckpts["cbam"], max_body_bytes=4096) as c:
        for path in ("/", "/static/index.html"):
            for headers in ({"Content-Length": "abc"}, {}):
                r = c.request("GET", path, content=b"x" * 5000, headers=headers)
                assert r.status_code == 200 and "<!doctype html>" in r.text, (path, headers)
        assert post_files(c, [noise_png()]).status_code == 200


def test_too_many_images(client: TestClient) -> None:
    blobs = [noise_png(i) for i in range(17)]
    assert_error(post_files(client, blobs), 422, "too many images", "16")
    images = [base64.b64encode(b).decode() for b in blobs]
    assert_error(
        client.post("/predict", json={"images": images}, headers=AUTH), 422, "too many images", "17"
    )
    assert post_files(client, blobs[:16]).status_code == 200


def test_a_json_body_of_countless_values_is_refused_before_it_is_parsed(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 16 data: URLs hold 31 commas and pass; a body of a million tiny values would cost the
    # event loop far more to parse than to refuse.
    url = "data:image/png;base64," + base64.b64encode(noise_png(0)).decode()
    r = client.post("/predict", json={"images": [url] * 16}, headers=AUTH)
    assert r.status_code == 200, r.text
    monkeypatch.setattr(uploads, "parse_json", None)  # not reached: refused before parsing
    body = b'{"images": ["a"], "x": [' + b",".join([b"0"] * 1_000_000) + b"]}"
    r = client.post("/predict", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert_error(r, 422, "too many images", "at most 16")


def test_empty_uploads(client: TestClient) -> None:
    assert_error(post_files(client, [b""]), 422, "img0.png", "empty")
    assert_error(client.post("/predict", json={"images": []}, headers=AUTH), 422, "images")
    assert_error(
        client.post("/predict", json={"images": [""]}, headers=AUTH),
        422,
        "images.0",
        "at least 1 character",
    )
    r = client.post(
        "/predict",
        data={"note": "hi"},
        headers=AUTH,
        files=[("other", ("x.png", noise_png(), "image/png"))],
    )
    assert_error(r, 422, "unexpected multipart field", "'note'", "'other'", "'files'")
    r = client.post(
        "/predict",
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"},
        content=b"--x--\r\n",
    )
    assert_error(r, 422, "no images")
    assert_error(client.post("/predict", headers=AUTH), 415, "multipart/form-data")
    assert_still_serving(client)


def test_bad_base64_and_json(client: TestClient) -> None:
    r = client.post("/predict", json={"images": ["not base64!!"]}, headers=AUTH)
    assert_error(r, 422, "images[0]", "not valid base64")
    r = client.post("/predict", json={"images": [base64.b64encode(b"text").decode()]}, headers=AUTH)
    assert_error(r, 422, "images[0]", "not a supported image")
    r = client.post(
        "/predict", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert_error(r, 400, "not valid JSON")
    assert_error(
        client.post("/predict", json={"image": ["x"]}, headers=AUTH), 422, "images", "image"
    )
    assert_error(client.post("/predict", json={"images": "abc"}, headers=AUTH), 422, "images")
    assert_still_serving(client)


def test_wrong_field_and_content_type(client: TestClient) -> None:
    assert_error(post_files(client, [noise_png()], field="file"), 422, "'file'", "'files'")
    r = client.post(
        "/predict",
        data={"files": "text, not a file"},
        headers=AUTH,
        files=[("files", ("a.png", noise_png(), "image/png"))],
    )
    assert_error(r, 422, "file uploads")
    r = client.post("/predict", content=noise_png(), headers={**AUTH, "Content-Type": "image/png"})
    assert_error(r, 415, "image/png", "multipart/form-data")
    r = client.post(
        "/predict", content=b"garbage", headers={**AUTH, "Content-Type": "multipart/form-data"}
    )
    assert_error(r, 400, "multipart")
    assert_error(client.get("/predict"), 405)
    assert_error(client.get("/nope"), 404)
    assert_still_serving(client)


def _cut_off(client: TestClient, path: str, content_type: str, first: bytes) -> list[dict]:
    """Send `first`, then disconnect before the rest of the body; what the app sent back."""
    messages = [
        {"type": "http.request", "body": first, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if len(messages) > 1 else messages[0]

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"content-type", content_type.encode()),
            (b"authorization", AUTH["Authorization"].encode()),
            (b"content-length", b"100000"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    assert client.portal is not None
    client.portal.call(client.app, scope, receive, send)
    return sent


@pytest.mark.parametrize(
    ("path", "content_type", "first"),
    [
        ("/predict", "application/json", b'{"images": ["iVBOR'),
        ("/predict", "multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form"),
        ("/reload", "application/json", b'{"path": "ck'),
    ],
)
def test_a_client_that_leaves_mid_body_is_no_server_error(
    client: TestClient, caplog: pytest.LogCaptureFixture, path, content_type, first
) -> None:
    with caplog.at_level(logging.ERROR, logger="serve"):
        sent = _cut_off(client, path, content_type, first)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 400 and b"disconnected" in body, body
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    assert_still_serving(client)
