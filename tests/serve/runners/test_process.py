"""One uvicorn process as users run it: answers, timeouts for stalled clients, the drain on
SIGTERM, loopback by default."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from serve_support import sample_png

from serve.testing import server, server_process

pytestmark = pytest.mark.slow

TOKEN = "e2e-token"


def test_uvicorn_process(experiment: Path) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with (
        server(experiment, env={"ECAB_SERVE_TOKEN": TOKEN}) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        assert http.get("/healthz").json() == {"status": "ok"}
        info = http.get("/model", headers=auth).json()
        assert info["path"] == str((experiment / "best").resolve())
        assert "path" not in http.get("/model").json()
        files = [
            ("files", ("a.png", sample_png(0), "image/png")),
            ("files", ("b.png", sample_png(1), "image/png")),
        ]
        r = http.post("/predict", files=files, headers=auth)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert len(preds) == 2 and all(len(p["top"]) == 5 for p in preds)
        assert set(preds[0]["attention"]) == {m["name"] for m in info["attention_modules"]}
        assert http.post("/predict", files=files).status_code == 401
        assert http.post("/reload", headers=auth).status_code == 200
        # A declared 1 GB body is refused before any of it is sent.
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000000000\r\nAuthorization: Bearer "
                + TOKEN.encode()
                + b"\r\n\r\n{"
            )
            head = s.recv(4096).decode(errors="replace")
        assert head.startswith("HTTP/1.1 413"), head
        assert http.get("/readyz").status_code == 200


def read_all(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and when it closed it."""
    start, data = time.monotonic(), b""
    sock.settimeout(limit_s)
    while chunk := sock.recv(4096):
        data += chunk
    return data, time.monotonic() - start


def test_stalled_clients_are_answered_408_and_cut_off(experiment: Path) -> None:
    with server(experiment, args=("--read-timeout-s", "1")) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as headers_only:
            headers_only.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # never ends
            with socket.create_connection(("127.0.0.1", port), timeout=10) as body_stalls:
                body_stalls.sendall(
                    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                    b"\r\nContent-Length: 1000000\r\n\r\n{"
                )
                # Meanwhile the server answers others.
                assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
                body, body_s = read_all(body_stalls, 10)
            head, head_s = read_all(headers_only, 10)
        assert head.startswith(b"HTTP/1.1 408"), head
        assert b"headers did not arrive within 1 s" in head
        assert body.startswith(b"HTTP/1.1 408"), body
        assert b"the body stalled" in body and b"connection: close" in body.lower()
        assert head_s < 5 and body_s < 5, (head_s, body_s)
        files = [("files", ("a.png", sample_png(0), "image/png"))]
        assert httpx.post(f"{url}/predict", files=files, timeout=10).status_code == 200


def test_sigterm_drains_requests_in_flight_within_a_bound(experiment: Path) -> None:
    png = sample_png(0)
    boundary = b"drain"
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="files"; '
        b'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
        + png
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
        b"boundary=" + boundary + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with server_process(experiment, args=("--drain-s", "3")) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        finishing = socket.create_connection(("127.0.0.1", port), timeout=10)
        stalled = socket.create_connection(("127.0.0.1", port), timeout=10)
        for sock in (finishing, stalled):
            sock.sendall(head + body[:100])
        time.sleep(0.5)  # both requests are in the app, reading their bodies
        proc.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        time.sleep(0.5)
        finishing.sendall(body[100:])  # a request in flight when SIGTERM came is answered
        answer, _ = read_all(finishing, 10)
        proc.wait(timeout=30)
        drained = time.monotonic() - stopped_at
        finishing.close()
        stalled.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b'"predictions"' in answer
    assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM once drained
    # The stalled one does not hold the exit up beyond the drain bound (3 s here).
    assert drained < 3 + 5, drained


def test_binds_loopback_by_default(experiment: Path) -> None:
    with server(experiment) as url:
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        out = (
            subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout
            if shutil.which("ss")
            else ""
        )
        if out:
            listening = [line for line in out.splitlines() if f":{port} " in line]
            assert listening and all("127.0.0.1:" in line for line in listening), listening
