"""`/reload` loads only under the model root, and names checkpoints relative to it."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from serve_support import AUTH, FASHION, TOKEN, assert_error, make_checkpoint, make_client


def test_reload_loads_only_under_the_model_root(client: TestClient, ckpts, tmp_path: Path) -> None:
    outside = make_checkpoint(tmp_path / "elsewhere", "se", FASHION, seed=9)
    r = client.post("/reload", json={"path": str(outside)}, headers=AUTH)
    assert_error(r, 403, "outside the model root")
    escape = client.post("/reload", json={"path": f"../{tmp_path.name}/elsewhere"}, headers=AUTH)
    assert_error(escape, 403, "outside the model root")
    link = ckpts["cbam"].parent / "link-out"
    link.symlink_to(outside, target_is_directory=True)
    try:  # a symbolic link inside the root that leads out of it is outside too
        assert_error(
            client.post("/reload", json={"path": "link-out"}, headers=AUTH), 403, "outside"
        )
    finally:
        link.unlink()
    # An experiment folder under the root whose best/ is a link out: outside as well.
    (experiment := ckpts["cbam"].parent / "linked-best").mkdir()
    (experiment / "best").symlink_to(outside, target_is_directory=True)
    assert_error(client.post("/reload", json={"path": "linked-best"}, headers=AUTH), 403, "outside")
    # Strings that are no usable path: a clear 422, not a 500.
    for bad, why in (("a\x00b", "null byte"), ("x" * 300, "too long"), ("~nosuchuser/x", "exist")):
        assert_error(client.post("/reload", json={"path": bad}, headers=AUTH), 422, why)
    # A relative path is taken from the root; the answer (with the token) has every detail.
    r = client.post("/reload", json={"path": "ecab"}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "ecab" and r.json()["path"] == str(ckpts["ecab"].resolve())
    assert r.json()["generation"] == 1
    with make_client(None, token=TOKEN) as c:  # no --model, no --model-root: nothing loads
        assert_error(
            c.post("/reload", json={"path": str(ckpts["ecab"])}, headers=AUTH), 403, "no model root"
        )
    with make_client(None, token=TOKEN, model_root=str(tmp_path)) as c:
        r = c.post("/reload", json={"path": "elsewhere"}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert c.get("/readyz").json() == {"status": "ready", "model": "elsewhere", "generation": 1}
