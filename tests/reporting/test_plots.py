"""The figures Optuna draws for the report (`ecab_tune.reporting.plots`): saved as PNG, without
changing matplotlib's global style or leaving pyplot figures open."""

import matplotlib
from matplotlib import pyplot as plt
from report_support import assert_valid_png

from ecab_tune.reporting import optuna_studies, plots


def test_optuna_figures_leave_pyplot_as_they_found_it(tmp_path):
    style = dict(matplotlib.rcParams)
    open_before = plt.get_fignums()
    values = [0.70, 0.86, 0.80, 0.91]
    labels = ["a1", "b2", "c3", "d4"]
    plots.optimisation_history(
        optuna_studies.values_study(values, labels, "max"), tmp_path / "h.png", ylabel="acc"
    )
    curves = {label: {1: v - 0.1, 2: v} for label, v in zip(labels, values, strict=True)}
    plots.intermediate_values(
        optuna_studies.curves_study(curves, "max"), tmp_path / "i.png", ylabel="acc"
    )
    front = plots.cost_front(
        optuna_studies.tradeoff_study([1, 2, 2, 3], values, labels, "max"),
        tmp_path / "p.png",
        xlabel="MACs",
        ylabel="acc",
        references={"none": (30.0, 0.95), "se": (30.0, 0.94)},
    )
    assert front == ["a1", "b2", "d4"]
    for name in ("h.png", "i.png", "p.png"):
        assert_valid_png(tmp_path / name)
    assert plt.get_fignums() == open_before
    assert dict(matplotlib.rcParams) == style  # Optuna switches pyplot to ggplot


def test_parallel_coordinates_put_an_option_a_row_did_not_draw_at_n_a(tmp_path):
    from ecab_tune.reporting.plots import _axis_positions, parallel_coordinates

    heights, ticks = _axis_positions([True, None, False], log=False)
    assert heights == [0.85, 1.0, 0.0] and ticks == [(0.0, "False"), (0.85, "True"), (1.0, "n/a")]
    heights, ticks = _axis_positions([None, 2, 16], log=True)
    assert heights == [1.0, 0.0, 0.85] and ticks[-1] == (1.0, "n/a")
    path = parallel_coordinates(
        {"fusion": ["sum", "concat"], "project": [None, True], "lr": [0.1, 0.2]},
        [0.8, 0.9],
        tmp_path / "pc.png",
        colour_label="val_acc",
        title="t",
    )
    assert_valid_png(path)
