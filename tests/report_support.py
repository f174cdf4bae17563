"""Shared by the report tests: a small experiment folder as a search leaves it, and PNG checks."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from ecab_tune.experiment import PARAMS_FILE, RESULT_FILE, SUMMARY_FILE, TRIAL_PREFIX

FIGURES = (
    "history.png",
    "importances.png",
    "importances_every_trial.png",
    "intermediate_values.png",
    "parallel_coordinates.png",
    "cost_epochs.png",
    "cost_time.png",
    "pareto_macs.png",
    "pareto_latency.png",
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
    folder = exp / f"{TRIAL_PREFIX}{trial_id}"
    folder.mkdir(parents=True)
    params = {"attention.fusion": fusion, "attention.layers": layers, "lr": lr, "weight_decay": wd}
    (folder / PARAMS_FILE).write_text(json.dumps(params))
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
    (folder / RESULT_FILE).write_text("\n".join(lines) + "\n")


def make_experiment(root: Path, trials: dict, summary: dict | None = None) -> Path:
    exp = root / "exp"
    for order, (trial_id, spec) in enumerate(trials.items()):
        write_trial(exp, trial_id, spec, order)
    if summary is not None:
        (exp / SUMMARY_FILE).write_text(json.dumps(summary))
    return exp


def assert_valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert 5_000 < len(data) < 5_000_000, (path, len(data))
    with Image.open(path) as image:
        image.verify()
