"""Parameter importances of a search (`ecab_tune.reporting.importance`)."""

import json
import subprocess
import sys

from report_support import TRIALS, assert_valid_png, make_experiment

from ecab_tune.experiment import PARAMS_FILE, TRIAL_PREFIX
from ecab_tune.reporting.importance import common_budget, comparable_trials, param_importances
from ecab_tune.reporting.trials import load_experiment


def test_full_budget_trials_are_compared_at_the_full_budget(tmp_path):
    exp = load_experiment(make_experiment(tmp_path, TRIALS))
    compared, budget = comparable_trials(exp, "val_acc")
    assert budget == 3 and sorted(t.trial_id for t in compared) == ["a1", "b2", "e5"]
    importances = param_importances(exp, "val_acc", "max")
    assert set(importances.values) == {"attention.fusion", "attention.layers", "lr", "weight_decay"}
    assert importances.how.startswith("FanovaImportanceEvaluator over 3 trials' best val_acc")


def test_a_parameter_only_some_trials_drew_is_named_as_left_out(tmp_path):
    folder = make_experiment(tmp_path, TRIALS)
    for trial, width in (("a1", 32), ("b2", 64)):  # e5 drew none (a `when` switched it off)
        params = folder / f"{TRIAL_PREFIX}{trial}" / PARAMS_FILE
        params.write_text(json.dumps({**json.loads(params.read_text()), "attention.width": width}))
    importances = param_importances(load_experiment(folder), "val_acc", "max")
    assert "attention.width" not in importances.values
    assert importances.how.endswith("; left out, drawn by only some trials: attention.width")


def test_every_trial_is_compared_at_the_budget_all_of_them_reached(tmp_path):
    exp = load_experiment(make_experiment(tmp_path, TRIALS))
    # f6 diverged; c3 was stopped after its first epoch, so every other trial counts its first.
    importances = param_importances(exp, "val_acc", "max", budget=1)
    assert importances.how.startswith(
        "FanovaImportanceEvaluator over 5 trials' best val_acc within 1 epoch (reached by every "
        "trial that ended)"
    )
    assert importances.budget == 1
    values = {t.params["lr"]: t.value for t in importances.study.trials}
    assert values == {0.10: 0.70, 0.20: 0.72, 0.30: 0.65, 0.06: 0.74, 0.15: 0.69}


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


def test_a_trial_that_just_started_does_not_hold_the_common_budget_down(tmp_path):
    trials = {k: v for k, v in TRIALS.items() if k != "c3"}  # without the 1-epoch stopped trial
    trials["g7"] = (("sum", "block", 0.12, 3e-4), [0.5], "cut")  # running, 1 epoch so far
    exp = load_experiment(make_experiment(tmp_path, trials))
    assert common_budget(exp, "val_acc") == 3  # a1, b2, e5 ended; d4, g7 still run
    trials["g7"] = (("sum", "block", 0.12, 3e-4), [0.5], "done")  # stopped after 1 epoch
    exp = load_experiment(make_experiment(tmp_path / "ended", trials))
    assert common_budget(exp, "val_acc") == 1
