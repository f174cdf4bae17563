import json
import subprocess
import sys
from pathlib import Path

import pytest
from ecab_tune.plots import pareto_front
from PIL import Image

from ecab_tune.report import main

FIGURES = (
    "history.png",
    "importances.png",
    "parallel_coordinates.png",
    "cost.png",
    "pareto.png",
    "best_learning_curve.png",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# id -> (params, val_acc after each epoch, how the result file ends: "done" (Ray marked the last
# result), "cut" (a driver killed mid-write) or "diverged"). Params lie within
# search_spaces/quick.yaml; the best is b2 with 0.91 after its third epoch.
TRIALS = {
    "a1": (("sum", "block", 0.10, 3e-4), [0.70, 0.80, 0.86], "done"),
    "b2": (("concat", "last2", 0.20, 5e-4), [0.72, 0.84, 0.91], "done"),
    "c3": (("concat", "stage", 0.30, 8e-4), [0.65], "done"),  # stopped by ASHA after 1 epoch
    "d4": (("sum", "last2", 0.06, 2e-4), [0.74, 0.83], "cut"),
    "e5": (("concat", "block", 0.15, 1e-4), [0.69, 0.81, 0.88], "done"),
    "f6": (("sum", "stage", 0.40, 1e-3), [0.30, 0.10], "diverged"),
}


def write_trial(exp: Path, trial_id: str, spec: tuple, order: int) -> None:
    (fusion, layers, lr, wd), accs, ending = spec
    folder = exp / f"trial_{trial_id}"
    folder.mkdir(parents=True)
    params = {"attention.fusion": fusion, "attention.layers": layers, "lr": lr, "weight_decay": wd}
    (folder / "params.json").write_text(json.dumps(params))
    lines = [
        json.dumps(
            {
                "epoch": epoch,
                "train_loss": 1.5 - acc,
                "train_acc": acc - 0.02,
                "val_loss": 1.4 - acc,
                "val_acc": acc,
                "lr": lr,
                "images_per_s": 900.0,
                "seconds": 30.0,
                "num_params": 81434,
                # Once per trial: concat fusion costs more than sum.
                "macs": 2_366_528 if fusion == "concat" else 2_365_312,
                "latency_ms": 0.8 + lr,
                "diverged": False,
                "fit_started_at": 1_000.0 + 100 * order,
                "done": ending == "done" and epoch == len(accs),
                "training_iteration": epoch,
                "trial_id": trial_id,
                "config": params,
            }
        )
        for epoch, acc in enumerate(accs, 1)
    ]
    if ending == "cut":
        lines.append('{"epoch": 3, "train_loss": 0.4, "val_a')
    if ending == "diverged":  # the trainable reports the last epoch again, flagged
        lines.append(lines[-1].replace('"diverged": false', '"diverged": true'))
    (folder / "result.json").write_text("\n".join(lines) + "\n")


def make_experiment(root: Path, trials: dict, summary: dict | None = None) -> Path:
    exp = root / "exp"
    for order, (trial_id, spec) in enumerate(trials.items()):
        write_trial(exp, trial_id, spec, order)
    if summary is not None:
        (exp / "summary.json").write_text(json.dumps(summary))
    return exp


def assert_valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert 5_000 < len(data) < 5_000_000, (path, len(data))
    with Image.open(path) as image:
        image.verify()


def test_partial_report_names_the_best_trial_and_draws_every_figure(tmp_path):
    exp = make_experiment(tmp_path, TRIALS)
    assert main([str(exp)]) == 0
    report = (exp / "report" / "report.md").read_text()
    best = report.split("## Best trial")[1].split("##")[0]
    assert "Trial: b2" in best and "val_acc: 0.9100 (epoch 3)" in best
    assert "Partial experiment" in report
    # Without summary.json the budget is the longest trial's 3 epochs.
    assert "6 (3 finished, 1 stopped early, 1 diverged, 0 errored, 1 running)" in report
    assert "trial_d4/result.json: 1 unreadable line(s) skipped" in report
    assert (
        report.index("| 1 | b2 |")
        < report.index("| 2 | e5 |")
        < report.index("| 5 | c3 |")
        < report.index("| 6 | f6 |")
    )
    assert "Skipped" not in report
    for name in FIGURES:
        assert f"]({name})" in report
        assert_valid_png(exp / "report" / name)


def test_finished_experiment_as_html(tmp_path):
    summary = {
        "best": {"trial_id": "b2", "test_acc": 0.9, "test_images": 10000},
        "search": {"space": "quick", "max_epochs": 3},
    }
    exp = make_experiment(tmp_path, TRIALS, summary)
    (exp / "trial_d4" / "error.txt").write_text("Failure # 3\nRuntimeError: out of memory\n")
    out = tmp_path / "html"
    assert main([str(exp), "--out", str(out), "--format", "html"]) == 0
    page = (out / "report.html").read_text()
    assert "Finished experiment" in page and "Partial" not in page
    assert "(3 finished, 1 stopped early, 1 diverged, 1 errored, 0 running)" in page
    assert "Search space: quick (quick)" in page and "test_acc 0.9000" in page
    for name in FIGURES:
        assert f'<img src="{name}"' in page
        assert_valid_png(out / name)


def test_one_trial_skips_importances(tmp_path):
    exp = make_experiment(tmp_path, {"b2": TRIALS["b2"]})
    (exp / "report").mkdir()
    (exp / "report" / "importances.png").write_bytes(b"stale")
    assert main([str(exp)]) == 0
    report = (exp / "report" / "report.md").read_text()
    assert "Skipped: needs 2 trials with val_acc at the same budget; there are 1." in report
    assert not (exp / "report" / "importances.png").exists()
    assert_valid_png(exp / "report" / "best_learning_curve.png")


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_no_experiment_exits_2_naming_the_folder(tmp_path, capsys, kind):
    folder = tmp_path / kind
    if kind == "empty":
        folder.mkdir()
    with pytest.raises(SystemExit) as exit_:
        main([str(folder)])
    assert exit_.value.code == 2
    assert str(folder) in capsys.readouterr().err


def test_unknown_metric_exits_2_listing_the_reported_ones(tmp_path, capsys):
    exp = make_experiment(tmp_path, {"a1": TRIALS["a1"]})
    with pytest.raises(SystemExit) as exit_:
        main([str(exp), "--metric", "val_accuracy"])
    assert exit_.value.code == 2
    assert "val_acc" in capsys.readouterr().err


def test_without_scikit_learn_importances_fall_back_to_ped_anova(tmp_path):
    # The deployed image has no scikit-learn: fANOVA and mean decrease impurity cannot run.
    exp = make_experiment(tmp_path, TRIALS)
    hide = "import sys; sys.modules['sklearn'] = None; from ecab_tune.report import main; "
    done = subprocess.run(
        [sys.executable, "-c", hide + f"raise SystemExit(main([{str(exp)!r}]))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = (exp / "report" / "report.md").read_text()
    note = report.split("### Parameter importances")[1].split("###")[0]
    assert "PedAnovaImportanceEvaluator over" in note and "fANOVA failed" in note
    assert_valid_png(exp / "report" / "importances.png")


def test_the_model_cost_front_is_skipped_for_trials_that_never_reported_macs(tmp_path):
    exp = make_experiment(tmp_path, TRIALS)
    for path in exp.glob("trial_*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
        old = [{k: v for k, v in r.items() if k not in ("macs", "latency_ms")} for r in rows]
        path.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert main([str(exp)]) == 0
    report = (exp / "report" / "report.md").read_text()
    assert "Skipped: no full-budget trial reported macs or latency_ms" in report


def test_pareto_front_keeps_the_best_value_for_each_cost():
    costs, accs = [1, 1, 2, 3, 3], [0.5, 0.6, 0.55, 0.9, 0.8]
    assert pareto_front(costs, accs, "max") == [1, 3]
    assert pareto_front(costs, [1 - a for a in accs], "min") == [1, 3]


def test_an_interrupted_search_reads_as_interrupted_in_the_searchs_own_words(tmp_path):
    summary = {
        "interrupted": True,
        "best": None,
        "search": {"space": "quick", "max_epochs": 3},
        "trials": [
            {"trial_id": "a1", "status": "finished"},
            {"trial_id": "d4", "status": "interrupted"},
        ],
    }
    exp = make_experiment(tmp_path, {k: TRIALS[k] for k in ("a1", "d4")}, summary)
    assert main([str(exp)]) == 0
    report = (exp / "report" / "report.md").read_text()
    assert "Interrupted experiment" in report and "--resume" in report
    assert "2 (1 finished, 0 stopped early, 0 diverged, 0 errored, 1 interrupted," in report
