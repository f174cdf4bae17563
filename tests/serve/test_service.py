"""What the routes call: reloads that fail no request, the in-flight cap and the deadline."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import load_file, save_file
from serve_support import (
    AUTH,
    RGB32,
    TOL,
    assert_error,
    assert_matches,
    concurrently,
    direct,
    encode,
    noise_png,
    post,
    post_files,
    slow_forward,
)

from ecab_tune import checkpoint
from serve.app import create_app
from serve.settings import ServeSettings


def test_reload_swaps_models_and_keeps_the_old_on_failure(
    client: TestClient, ckpts, under_root: Path
) -> None:
    r = client.post("/reload", json={"path": str(ckpts["bridge_rgb"])}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["attention"] == "bridge" and r.json()["input_shape"] == [3, 32, 32]
    assert client.get("/model").json()["attention"] == "bridge"
    photo = encode(np.random.default_rng(0).integers(0, 256, (50, 60, 3), dtype=np.uint8))
    pred = post_files(client, [photo]).json()["predictions"][0]
    probs, maps = direct(ckpts["bridge_rgb"], Image.open(io.BytesIO(photo)))
    assert_matches(pred, probs, maps, RGB32.classes)
    assert all(
        set(w) == {"channel", "spatial", "sources"}
        and w["spatial"] is None
        and sum(w["sources"].values()) == pytest.approx(1)  # a bridge gate's source shares
        for w in pred["attention"].values()
    )

    # No body: re-read the current source.
    assert client.post("/reload", headers=AUTH).json()["attention"] == "bridge"

    for bad, words in [
        (under_root / "missing", ("does not exist",)),
        (under_root, ("neither a checkpoint",)),
    ]:
        assert_error(client.post("/reload", json={"path": str(bad)}, headers=AUTH), 422, *words)
    broken = under_root / "broken"
    shutil.copytree(ckpts["cbam"], broken)
    (broken / checkpoint.META).write_text("{")
    assert_error(client.post("/reload", json={"path": str(broken)}, headers=AUTH), 422, "malformed")
    mismatched = under_root / "mismatched"
    shutil.copytree(ckpts["cbam"], mismatched)
    shutil.copy(ckpts["ecab"] / checkpoint.WEIGHTS, mismatched / checkpoint.WEIGHTS)
    assert_error(
        client.post("/reload", json={"path": str(mismatched)}, headers=AUTH), 422, "does not match"
    )
    bad_option = under_root / "bad_option"
    shutil.copytree(ckpts["ecab"], bad_option)
    meta = json.loads((bad_option / checkpoint.META).read_text())
    meta["model"]["attention_kwargs"]["fusion"] = "no-such-fusion"
    (bad_option / checkpoint.META).write_text(json.dumps(meta))
    assert_error(
        client.post("/reload", json={"path": str(bad_option)}, headers=AUTH),
        422,
        "no-such-fusion",
        "still serving",
    )
    diverged = under_root / "diverged"
    shutil.copytree(ckpts["ecab"], diverged)
    weights = load_file(diverged / checkpoint.WEIGHTS)
    weights["fc.weight"][0, 0] = float("nan")
    save_file(weights, diverged / checkpoint.WEIGHTS)
    assert_error(client.post("/reload", json={"path": str(diverged)}, headers=AUTH), 422, "NaN")
    assert_error(client.post("/reload", json={"path": 3}, headers=AUTH), 422, "path")
    assert_error(client.post("/reload?force=1", headers=AUTH), 422, "force")
    r = client.post(
        "/reload", content=b"{nope", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert_error(r, 400, "not valid JSON")
    assert client.get("/model").json()["attention"] == "bridge"
    assert post_files(client, [photo]).status_code == 200
    # Two good reloads and six refused: the generation counts the good ones.
    assert client.get("/readyz").json()["generation"] == 2


def test_reload_under_concurrent_load_fails_no_request(client: TestClient, ckpts) -> None:
    png = noise_png(11)
    expected = {
        name: direct(ckpts[name], Image.open(io.BytesIO(png)))
        for name in ("cbam", "ecab", "cbam_rgb")
    }
    stop = threading.Event()
    failures: list[str] = []
    served: set[str] = set()

    def hammer() -> int:
        n = 0
        while not stop.is_set() and n < 400:
            r = post_files(client, [png], "?top_k=10")
            n += 1
            if r.status_code != 200:
                failures.append(r.text)
                continue
            body = r.json()
            served.add(body["model"])
            probs, _ = expected[body["model"]]
            got = {t["index"]: t["probability"] for t in body["predictions"][0]["top"]}
            if any(abs(p - probs[i].item()) > TOL for i, p in got.items()):
                failures.append(f"wrong answer from {body['model']}")
        return n

    with ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(hammer) for _ in range(4)]
        for name in ["ecab", "cbam_rgb", "cbam", "ecab", "cbam_rgb", "cbam"]:
            time.sleep(0.05)
            r = client.post("/reload", json={"path": str(ckpts[name])}, headers=AUTH)
            assert r.status_code == 200, r.text
        stop.set()
        total = sum(run.result(timeout=120) for run in runs)
    assert not failures, failures[:3]
    assert total > 0 and len(served) >= 2


def test_past_the_in_flight_cap_503_with_retry_after(ckpt: Path) -> None:
    with TestClient(create_app(ServeSettings(model=str(ckpt), max_in_flight=2, max_batch=1))) as c:
        slow_forward(c, 0.4)
        responses = concurrently(c, 6)
        codes = sorted(r.status_code for r in responses)
        assert codes.count(200) >= 2 and set(codes) <= {200, 503}, codes
        refused = [r for r in responses if r.status_code == 503]
        assert refused, codes
        for r in refused:
            assert r.headers["retry-after"] == "1"
            assert "over capacity" in r.json()["detail"] and "cap is 2" in r.json()["detail"]
        assert c.app.state.service.in_flight == 0
        assert post(c).status_code == 200  # capacity is back once they are answered


def test_the_deadline_answers_504_and_frees_the_batch_slots(ckpt: Path) -> None:
    settings = ServeSettings(model=str(ckpt), max_batch=1, request_timeout_s=0.3)
    with TestClient(create_app(settings)) as c:
        calls = slow_forward(c, 0.6)
        responses = concurrently(c, 4)
        assert [r.status_code for r in responses] == [504] * 4
        assert all("deadline of 0.3 s" in r.json()["detail"] for r in responses)
        time.sleep(1.5)  # the forward running at the deadline finishes; the rest never start
        assert len(calls) < 4, calls
        batcher = c.app.state.service.batcher
        assert not batcher._queue and batcher._queued_images == 0
        c.app.state.service.handle.model._forward_pre_hooks.clear()
        assert post(c).status_code == 200
