"""Real searches on 600 images: two objectives with TensorBoard, then a warm start from it with
MLflow. Each trial trains one epoch; the exports are served by `python -m serve`."""

import json
import struct

import httpx
import optuna
import pytest
from search_support import SPACE, needs_fmnist, run_driver, search_command, trial_results
from serve_support import encode, fashion_test_images

from ecab_tune.search.warm_start import FROM_ATTR
from serve.testing import server

OBJECTIVES = "val_acc:max,macs:min"


def tiny_search(root, name, *extra):
    args = search_command(
        root / "tiny.yaml", root, "--max-epochs", "1", "--max-concurrent", "1",
        "--objectives", OBJECTIVES, *extra,
    )  # fmt: skip
    args[args.index("--name") + 1] = name
    code = run_driver(args, root / f"{name}.log")
    assert code == 0, (root / f"{name}.log").read_text()[-3000:]
    return root / name


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
    """(a 3-trial two-objective search with TensorBoard, a 2-trial warm start from it with
    MLflow)."""
    root = tmp_path_factory.mktemp("objectives")
    (root / "tiny.yaml").write_text(SPACE)
    first = tiny_search(root, "first", "--num-samples", "3", "--tracker", "tensorboard")
    second = tiny_search(
        root, "second", "--num-samples", "2", "--tracker", "mlflow", "--warm-start", str(first)
    )
    return first, second


def study(exp):
    return optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp / 'optuna.db'}")


def tfevent_tags(path):
    """The scalar tags of a TensorBoard event file (TFRecord framing, Event protos)."""
    from tensorboardX.proto.event_pb2 import Event

    data, tags, at = path.read_bytes(), set(), 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        event = Event.FromString(data[at + 12 : at + 12 + length])
        tags |= {v.tag for v in event.summary.value}
        at += 12 + length + 4
    return tags


@pytest.mark.slow
@needs_fmnist
def test_every_trial_reports_its_cost_and_optuna_sees_both_objectives(searches):
    first, _ = searches
    for rows in trial_results(first).values():
        assert rows[-1]["macs"] > 0 and 0 < rows[-1]["latency_ms"] < 1000
    s = study(first)
    assert [d.name for d in s.directions] == ["MAXIMIZE", "MINIMIZE"]
    complete = s.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 3
    for trial in complete:
        rows = trial_results(first)[trial.user_attrs["trial_id"]]
        assert trial.values == [rows[-1]["val_acc"], rows[-1]["macs"]]


@pytest.mark.slow
@needs_fmnist
def test_the_pareto_set_is_exported_and_served(searches):
    first, _ = searches
    pareto = json.loads((first / "summary.json").read_text())["pareto"]
    assert len(pareto) >= 1 and [m["k"] for m in pareto] == list(range(len(pareto)))
    # No member is dominated by another trial that finished.
    results = {t: rows[-1] for t, rows in trial_results(first).items()}
    for member in pareto:
        assert not any(
            r["val_acc"] >= member["val_acc"]
            and r["macs"] <= member["macs"]
            and (r["val_acc"], r["macs"]) != (member["val_acc"], member["macs"])
            for r in results.values()
        )
        meta = json.loads((first / "pareto" / str(member["k"]) / "meta.json").read_text())
        assert meta["metrics"]["trial_id"] == member["trial_id"]
        assert meta["extra"]["pareto"]["rank"] == member["k"]
        assert meta["metrics"]["macs"] == member["macs"]
    # best/ stays the first objective's best, which leads the Pareto set.
    best = json.loads((first / "best" / "meta.json").read_text())["metrics"]
    assert pareto[0]["val_acc"] == max(r["val_acc"] for r in results.values())
    assert best["trial_id"] in {
        t for t, r in results.items() if r["val_acc"] == pareto[0]["val_acc"]
    }

    member = first / "pareto" / str(len(pareto) - 1)
    image, _ = fashion_test_images(1)[0]
    with server(member) as url:
        info = httpx.get(f"{url}/model", timeout=10).json()
        assert info["architecture"] == "resnet8"
        files = [("files", ("a.png", encode(image), "image/png"))]
        reply = httpx.post(f"{url}/predict", files=files, timeout=30)
        assert reply.status_code == 200, reply.text


@pytest.mark.slow
@needs_fmnist
def test_tensorboard_event_files_hold_the_trials_metrics(searches):
    first, _ = searches
    folders = sorted(first.glob("trial_*"))
    assert len(folders) == 3
    for folder in folders:
        (events,) = folder.glob("events.out.tfevents.*")
        tags = tfevent_tags(events)
        assert {"ray/tune/val_acc", "ray/tune/macs", "ray/tune/latency_ms"} <= tags, tags


@pytest.mark.slow
@needs_fmnist
def test_a_warm_started_study_holds_the_old_trials(searches):
    first, second = searches
    old = {t.user_attrs["trial_id"]: t for t in study(first).trials}
    trials = study(second).trials
    seeded = [t for t in trials if FROM_ATTR in t.user_attrs]
    assert sorted(t.user_attrs[FROM_ATTR] for t in seeded) == sorted(
        str(first / f"trial_{tid}") for tid in old
    )
    for trial in seeded:
        source = old[trial.user_attrs[FROM_ATTR].rsplit("trial_", 1)[1]]
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.params == source.params and trial.values == source.values
    assert len(trials) == 3 + 2  # and the two trials this search trained
    assert "warm start from" in (first.parent / "second.log").read_text()


@pytest.mark.slow
@needs_fmnist
def test_mlflow_has_a_run_per_trial_with_its_metrics(searches):
    from mlflow.tracking import MlflowClient

    _, second = searches
    client = MlflowClient(tracking_uri=f"sqlite:///{second / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("second")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    for run in runs:
        assert {"val_acc", "macs", "latency_ms"} <= set(run.data.metrics), run.data.metrics
        assert 0.0 <= run.data.metrics["val_acc"] <= 1.0
