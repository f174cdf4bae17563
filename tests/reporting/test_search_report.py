"""The search report of an experiment folder (`ecab_tune.reporting.search_report`), through
its command, `python -m ecab_tune.report`."""

import json
import re
from pathlib import Path

import pytest
from report_support import FIGURES, TRIALS, assert_valid_png, make_experiment

from ecab_tune.experiment import RESULT_FILE, read_results, trial_folders
from ecab_tune.report import main
from ecab_tune.reporting.search_figures import ReportConfig
from ecab_tune.reporting.search_report import best_section, top_table
from ecab_tune.reporting.trials import load_experiment
from ecab_tune.search.space import SPACES_DIR

REPO = Path(__file__).resolve().parents[2]
PILOT = REPO / "benchmarks" / "results" / "fmnist-resnet20-pilot30"


def section(report: str, title: str) -> str:
    return report.split(f"### {title}")[1].split("###")[0]


def test_partial_report_names_the_best_trial_and_draws_every_figure(tmp_path):
    exp = make_experiment(tmp_path, TRIALS)
    assert main([str(exp)]) == 0
    report = (exp / "report" / "report.md").read_text()
    best = report.split("## Best trial")[1].split("##")[0]
    assert "Trial: b2" in best and "val_acc: 0.9100 (epoch 3)" in best
    assert "Partial experiment" in report
    # Without summary.json the budget is the longest trial's 3 epochs.
    assert "6 (3 finished, 1 stopped early, 1 diverged, 0 errored, 1 running)" in report
    # 14 epochs of 30 s (results without Tune's time_total_s: training time alone).
    assert "Compute: 14 epochs trained, 0.78x of every trial's full budget (18); 0.12 " in report
    assert "trial_d4/result.json: 1 unreadable line(s) skipped" in report
    assert (
        report.index("| 1 | b2 |")
        < report.index("| 2 | e5 |")
        < report.index("| 5 | c3 |")
        < report.index("| 6 | f6 |")
    )
    # The search's own table (ecab_tune.search.results), as the search printed it.
    assert "| # | trial | val_acc | epochs | time | status | params |" in report
    assert "attention.fusion=concat, attention.layers=last2, lr=0.2, weight_decay=0.0005" in report
    assert "Skipped" not in report
    for name in FIGURES:
        assert f"]({name})" in report
        assert_valid_png(exp / "report" / name)


def test_each_attention_option_s_values_are_set_side_by_side(tmp_path):
    exp = make_experiment(tmp_path, TRIALS)
    assert main([str(exp)]) == 0
    table = (exp / "report" / "report.md").read_text().split("## Attention options")[1]
    # c3 ran 1 epoch, so every trial is scored within 1; f6 diverged and is left out. sum: a1
    # (0.70, on to 3 epochs: 0.86) and d4 (0.74); concat: b2 (0.72, 0.91), c3 (0.65), e5 (0.69,
    # 0.88).
    assert "| fusion | concat | 3 | 0.6867 | 0.7200 | 2 | 0.9100 |" in table
    assert "| fusion | sum | 2 | 0.7200 | 0.7400 | 1 | 0.8600 |" in table
    assert "| layers | stage | 1 | 0.6500 | 0.6500 | 0 | - |" in table
    assert (
        "| option | value | trials | mean within 1 epoch | best within 1 epoch | ran 3 epochs |"
        in (table)
    )


def test_the_cost_fronts_name_their_members(tmp_path):
    # Full budget: a1 (sum: fewer MACs, 0.86), b2 and e5 (concat; 0.91, 0.88); latency 0.8 + lr.
    exp = make_experiment(tmp_path, TRIALS)
    assert main([str(exp)]) == 0
    report = (exp / "report" / "report.md").read_text()
    assert "red: the Pareto front (a1, b2)" in section(report, "Accuracy vs MACs")
    assert "red: the Pareto front (a1, e5, b2)" in section(report, "Accuracy vs latency")
    # Stopped trials count on the training-cost fronts: c3 after one epoch, d4 after two.
    assert "(c3, d4, b2)" in section(report, "Accuracy vs epochs trained")


def test_a_trial_that_diverged_in_its_last_epoch_is_on_no_model_cost_front(tmp_path):
    # g7 scored 0.93 (concat: b2's MACs) before diverging in epoch 3: no model at that cost.
    late = (("concat", "last2", 0.5, 5e-4), [0.75, 0.93, 0.10], "diverged")
    exp = make_experiment(tmp_path, {**TRIALS, "g7": late})
    assert main([str(exp)]) == 0
    report = (exp / "report" / "report.md").read_text()
    assert "red: the Pareto front (a1, b2)" in section(report, "Accuracy vs MACs")
    assert "g7" not in section(report, "Accuracy vs latency")


def test_a_studys_plain_and_se_arms_are_marked_where_it_recorded_the_cost(tmp_path):
    exp = make_experiment(tmp_path, TRIALS)
    assert main([str(exp), "--study", str(PILOT / "runs.jsonl")]) == 0
    report = (exp / "report" / "report.md").read_text()
    assert f"Baselines: none, se of {PILOT / 'runs.jsonl'}" in report
    macs = section(report, "Accuracy vs MACs")
    assert "star none: the study's arm, mean over 2 seed(s) of each run's best val_acc" in macs
    assert "star se:" in macs
    latency = section(report, "Accuracy vs latency")
    assert "the study records no latency_ms of arm none" in latency and "star" not in latency
    assert_valid_png(exp / "report" / "pareto_macs.png")


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
    assert "(3 finished, 1 stopped early, 1 diverged, 1 errored)" in page  # none running
    assert "<li>Search space: quick</li>" in page and "test_acc 0.9000" in page
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


def test_trials_that_all_ran_the_full_budget_get_one_importance_figure(tmp_path):
    exp = make_experiment(tmp_path, {k: TRIALS[k] for k in ("a1", "b2", "e5")})  # FIFO-like
    assert main([str(exp)]) == 0
    report = (exp / "report" / "report.md").read_text()
    assert "3 trials' best val_acc within 3 epochs" in section(report, "Parameter importances")
    assert "Skipped: the figure above compares every trial already." in section(
        report, "Parameter importances, every trial"
    )
    assert not (exp / "report" / "importances_every_trial.png").exists()


def test_the_model_cost_front_is_skipped_for_trials_that_never_reported_macs(tmp_path):
    exp = make_experiment(tmp_path, TRIALS)
    for folder in trial_folders(exp):
        rows = read_results(folder).rows
        old = [{k: v for k, v in r.items() if k not in ("macs", "latency_ms")} for r in rows]
        (folder / RESULT_FILE).write_text("".join(json.dumps(r) + "\n" for r in old))
    assert main([str(exp)]) == 0
    report = (exp / "report" / "report.md").read_text()
    for cost in ("macs", "latency_ms"):
        assert f"Skipped: no full-budget trial reported {cost}" in report


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
    assert "Interrupted experiment" in report
    assert f"`python -m ecab_tune.search --name exp --storage {tmp_path} --resume`" in report
    assert "2 (1 finished, 0 stopped early, 0 diverged, 0 errored, 1 interrupted)" in report
    # A report of a snapshot names the experiment the search itself names.
    said = {"name": "real", "storage": "runs", "snapshot": "state/real"}
    summary["search"].update(said)
    (exp / "summary.json").write_text(json.dumps(summary))
    assert main([str(exp)]) == 0
    report = (exp / "report" / "report.md").read_text()
    assert "`python -m ecab_tune.search --name real --snapshot state/real --resume`" in report


def test_the_readme_block_is_rebuilt_and_nothing_else_in_the_file_changes(tmp_path):
    summary = {
        "best": {"trial_id": "b2", "test_acc": 0.9, "test_images": 10000},
        "search": {"space": "quick", "max_epochs": 3},
    }
    exp = make_experiment(tmp_path, TRIALS, summary)
    readme = tmp_path / "docs" / "README.md"
    readme.parent.mkdir()
    readme.write_text("# Ours\n<!-- begin search:exp -->\nSTALE\n<!-- end search:exp -->\nEnd.\n")
    out = tmp_path / "results"
    assert main([str(exp), "--out", str(out), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Ours\n<!-- begin search:exp -->\nFinished experiment (summary")
    assert text.endswith("<!-- end search:exp -->\nEnd.\n") and "STALE" not in text
    assert "### Best trial" in text and "- Trial: b2" in text and "test_acc 0.9000" in text
    assert "### Top 6 trials by best val_acc" in text and "| 1 | b2 |" in text
    links = re.findall(r"\]\(([^)]+)\)", text)
    figures = [
        f"../results/{name}.png"
        for name in ("importances", "importances_every_trial", "parallel_coordinates")
    ]
    assert links == [*figures, "../results/report.md"]
    assert all((readme.parent / link).is_file() for link in links)


def test_a_readme_without_the_block_is_refused_before_any_figure(tmp_path, capsys):
    exp = make_experiment(tmp_path, TRIALS)
    readme = tmp_path / "README.md"
    readme.write_text("# Ours\n<!-- begin search:other -->\n<!-- end search:other -->\n")
    with pytest.raises(SystemExit) as exit_:
        main([str(exp), "--readme", str(readme)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"--readme {readme}: " in err
    assert "needs one <!-- begin search:exp --> ... <!-- end search:exp --> block" in err
    assert not (exp / "report").exists()


def test_a_running_search_reads_its_budget_and_space_from_search_json(tmp_path):
    exp = make_experiment(tmp_path, {k: TRIALS[k] for k in ("a1", "b2", "c3")})
    settings = {"space": "quick", "max_epochs": 5, "num_samples": 6}
    (exp / "search.json").write_text(json.dumps(settings))
    (exp / "trial_z9").mkdir()  # made by Ray, waiting for a free CPU: not started
    assert main([str(exp)]) == 0
    report = (exp / "report" / "report.md").read_text()
    assert "Partial experiment" in report
    assert "Budget: 5 epochs per trial (search.json)" in report
    assert "- Search space: quick\n" in report  # named once when the name is the file
    # Ray marked a1, b2, c3 done short of the 5 epochs (ASHA); z9 has not started, and Ray has
    # not made the last two of the six asked for.
    assert (
        "Trials: 6 (0 finished, 3 stopped early, 0 diverged, 0 errored, 3 pending, 0 running)"
        in (report)
    )
    assert "Compute: 7 epochs trained, 0.23x of every trial's full budget (30)" in report


def test_the_fusion_figure_draws_every_trial_and_a_conditional_option_as_n_a(tmp_path, monkeypatch):
    from ecab_tune.experiment import PARAMS_FILE
    from ecab_tune.reporting import search_figures

    exp = make_experiment(tmp_path, TRIALS)
    for folder in trial_folders(exp):  # as bridge.yaml draws `project` under concat only
        params = json.loads((folder / PARAMS_FILE).read_text())
        if params["attention.fusion"] == "concat":
            (folder / PARAMS_FILE).write_text(json.dumps({**params, "attention.project": True}))
    drawn = {}
    monkeypatch.setattr(
        search_figures.plots, "parallel_coordinates", lambda axes, *a, **k: drawn.update(axes)
    )
    cfg = search_figures.ReportConfig(tmp_path / "out", "md", "val_acc", "max", (), "")
    plot = search_figures.plot_fusion_variants(load_experiment(exp), cfg)
    assert sorted(drawn) == ["attention.fusion", "attention.layers", "attention.project", "lr"]
    assert sorted(drawn["attention.fusion"]) == ["concat"] * 3 + ["sum"] * 3
    fusion_project = sorted(zip(drawn["attention.fusion"], drawn["attention.project"], strict=True))
    assert fusion_project == [("concat", True)] * 3 + [("sum", None)] * 3
    assert "every scored trial (6); n/a: a trial that did not draw attention.project" in plot.note


def test_options_table_headings_stay_distinct_when_every_trial_ran_the_full_budget(tmp_path):
    exp = make_experiment(tmp_path, {"a1": TRIALS["a1"]}, {"search": {"max_epochs": 3}})
    assert main([str(exp)]) == 0
    report = (exp / "report" / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| option |"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert len(set(cells)) == len(cells) and "best within 3 epochs" in cells


def test_a_whole_number_metric_reads_as_the_search_printed_it(tmp_path):
    # MACs are reported as ints: the search's table prints 2,365,312, the report once 2365312.0000.
    exp = load_experiment(make_experiment(tmp_path, TRIALS))
    cfg = ReportConfig(tmp_path / "report", "md", "macs", "min")
    [_, table] = top_table(exp, cfg)
    assert table.rows[0][:3] == ("1", "a1", "2,365,312")
    assert "macs: 2365312 (epoch 1)" in best_section(exp, cfg)[1].items


def test_an_unfinished_search_reads_the_space_it_started_with_though_the_file_went(tmp_path):
    exp = make_experiment(tmp_path, TRIALS)
    gone = tmp_path / "elsewhere" / "mine.yaml"  # search.json names the first machine's file
    (exp / "search.json").write_text(json.dumps({"space": str(gone)}))
    assert load_experiment(exp).space is None  # before the search kept a copy: unreadable
    (exp / "search_space.yaml").write_text((SPACES_DIR / "quick.yaml").read_text())
    loaded = load_experiment(exp)
    assert loaded.space is not None and {p.name for p in loaded.space.params} >= {"lr"}
    assert loaded.space_source == f"{gone} ({exp / 'search_space.yaml'})"
