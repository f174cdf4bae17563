import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from search_support import REPO, needs_fmnist, trial_results

from ecab_tune.dashboard import main, study_storage, study_url


def test_a_folder_that_is_no_experiment_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "notes")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "holds no optuna.db: not an experiment folder of ecab_tune.search" in err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing")])
    assert "does not exist" in capsys.readouterr().err
    # A damaged or empty database is named, and the viewer writes nothing into it.
    for content, words in (
        (b"some text", "is not an SQLite database"),
        (b"", "is empty"),
        (b"SQLite format 3\x00" + bytes(range(256)) * 8, "cannot be read: file is not a database"),
    ):
        (tmp_path / "notes" / "optuna.db").write_bytes(content)
        with pytest.raises(SystemExit):
            main([str(tmp_path / "notes")])
        assert words in capsys.readouterr().err
        assert (tmp_path / "notes" / "optuna.db").read_bytes() == content
    for port in ("99999", "-5", "http"):
        with pytest.raises(SystemExit):
            main([str(tmp_path / "notes"), "--port", port])
        assert "argument --port" in capsys.readouterr().err


def test_the_printed_url_brackets_an_ipv6_host(tmp_path):
    import optuna

    (tmp_path / "exp").mkdir()
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'exp' / 'optuna.db'}", study_name="exp")
    storage, name = study_storage(tmp_path / "exp")
    assert study_url(storage, name, "::1", 8080) == "http://[::1]:8080/dashboard/studies/1"
    assert study_url(storage, name, "127.0.0.1", 80) == "http://127.0.0.1:80/dashboard/studies/1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


@pytest.mark.slow
@needs_fmnist
def test_the_dashboard_serves_every_trials_learning_curve(quick_search):
    # ASHA (grace 1) stopped some of the quick search's trials after their first epoch.
    exp = quick_search[0]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "ecab_tune.dashboard", str(exp), "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        printed = server.stdout.readline()
        assert f"http://127.0.0.1:{port}/dashboard/studies/" in printed, printed
        deadline = time.monotonic() + 30
        while True:
            try:
                studies = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not answer"
                time.sleep(0.3)
        (study,) = studies
        assert study["study_name"] == "exp"
        detail = get_json(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    results = trial_results(exp)
    trials = detail["trials"]
    assert len(trials) == len(results) == 4
    assert "Pruned" in {t["state"] for t in trials}, [t["state"] for t in trials]
    for trial in trials:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        epochs = sorted(r["training_iteration"] for r in results[attrs["trial_id"]])
        assert [v["step"] for v in trial["intermediate_values"]] == epochs, attrs
        assert attrs["status"] in ("finished", "stopped early") and attrs["epochs"] == str(
            epochs[-1]
        )
        assert attrs["trial_folder"] == str(exp / f"trial_{attrs['trial_id']}")
