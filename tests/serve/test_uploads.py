"""Request bodies: the size limit, multipart and JSON uploads, and what is refused in them."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient
from serve_support import (
    AUTH,
    assert_error,
    assert_still_serving,
    make_client,
    noise_png,
    post_files,
)


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
