import json
import math
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from synthetic import make_splits
from torch import nn

from ecab_tune import checkpoint
from ecab_tune.compare import build_parser, ecab_options, main
from ecab_tune.models import ModelConfig
from ecab_tune.profile import count_macs
from ecab_tune.stats import approx_t975, mean_std, paired_ci

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not FMNIST.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (scripts/setup.sh installs it)",
)
PNGS = ("accuracy_vs_params.png", "learning_curves.png", "attention_weights.png")

# Three seeds; differences 0.02, 0.01, 0.03: mean 0.02, sd 0.01, t(0.975, 2) = 4.302653.
WITH = [0.80, 0.82, 0.85]
WITHOUT = [0.78, 0.81, 0.82]
HALF_WIDTH = 4.302653 * 0.01 / math.sqrt(3)


# ---------------------------------------------------------------- statistics
def test_paired_ci_matches_the_hand_computation():
    ci = paired_ci(WITH, WITHOUT)
    assert ci.n == 3 and ci.mean == pytest.approx(0.02)
    assert (ci.low, ci.high) == pytest.approx((0.02 - HALF_WIDTH, 0.02 + HALF_WIDTH), abs=1e-6)
    assert not ci.excludes_zero
    assert paired_ci([x + 0.05 for x in WITH], WITH).excludes_zero


def test_paired_ci_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    a, b = [0.91, 0.88, 0.93, 0.90, 0.87], [0.89, 0.88, 0.90, 0.86, 0.88]
    ci, reference = paired_ci(a, b), stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (ci.low, ci.high) == pytest.approx((reference.low, reference.high))
    assert ci.t_source == "scipy"


def test_t_table_fallback_is_close_to_the_exact_quantile():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 120):
        assert approx_t975(df) == pytest.approx(stats.t.ppf(0.975, df), rel=5e-4), df


def test_one_seed_gives_no_interval_and_no_std():
    assert paired_ci([0.9], [0.8]) is None
    mean, std = mean_std([0.9])
    assert mean == 0.9 and math.isnan(std)
    with pytest.raises(ValueError, match="length"):
        paired_ci([0.9, 0.8], [0.8])


# ---------------------------------------------------------------- multiply-adds
def test_count_macs_matches_the_hand_count_and_leaves_the_model_alone():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # 4×8×8 outputs × (1·3·3) = 2304
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2),  # 8×4×4 × (2·3·3) = 2304
        nn.Flatten(),
        nn.Linear(128, 10),  # 10 × 128 = 1280
    )
    running_mean = model[1].running_mean.clone()
    assert count_macs(model, (1, 8, 8)) == 2304 + 2304 + 1280
    assert model.training and torch.equal(model[1].running_mean, running_mean)


# ---------------------------------------------------------------- CLI
@pytest.mark.parametrize(
    "argv,words",
    [
        (["--ecab", "fusion"], "expected KEY=VALUE, got 'fusion'"),
        (["--variants", "none", "se", "--ecab", "fusion=sum"], "which --variants omits"),
        (["--variants", "se", "se"], "more than once"),
        (["--seeds", "0"], "--seeds=0 must be >= 1"),
        (["--cpus-per-trial", "0"], "--cpus-per-trial=0.0 must be > 0"),
        (["--ecab-from", "/nonexistent"], "meta.json is missing"),
        (["--variants", "gate"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_flags_before_any_work(argv, words, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert words in capsys.readouterr().err


def save_searched(folder: Path, attention: str, **options) -> Path:
    model_cfg = ModelConfig("resnet8", attention, options, width=0.25, num_classes=4, in_chans=1)
    meta = checkpoint.Meta(model_cfg, make_splits().info)
    return checkpoint.save(folder, model_cfg.build(), meta)


def test_ecab_options_come_from_a_searched_checkpoint_and_flags_override(tmp_path):
    best = save_searched(tmp_path / "best", "ecab", fusion="sum", layers="last2")
    args = build_parser().parse_args(["--ecab-from", str(best), "--ecab", "layers=all"])
    assert ecab_options(args) == {"fusion": "sum", "layers": "all"}
    other = save_searched(tmp_path / "se", "se", reduction=8)
    with pytest.raises(ValueError, match="uses 'se', not ecab"):
        ecab_options(build_parser().parse_args(["--ecab-from", str(other)]))


@needs_fmnist
def test_bad_ecab_option_is_caught_before_training(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["--subset", "300", "--ecab", "fusion=mean", "--out", str(tmp_path)])
    assert "fusion='mean' is invalid" in capsys.readouterr().err


# ---------------------------------------------------------------- a real study through Ray
def table_rows(table: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


@pytest.mark.slow
@needs_fmnist
def test_study_end_to_end(local_ray, tmp_path, capsys):
    out = tmp_path / "study"
    variants = ["none", "se", "ecab"]
    code = main(
        [
            *("--model", "resnet8", "--width", "0.25", "--subset", "300", "--epochs", "1"),
            *("--seeds", "2", "--batch-size", "64", "--variants", *variants),
            *("--ecab", "fusion=sum", "--out", str(out)),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count("[compare] ") >= 6 and "(0 left)" in printed

    rows = table_rows((out / "table.md").read_text())
    assert list(rows) == variants
    for variant, cells in rows.items():
        numbers = [float(n) for n in re.findall(r"[-+]?\d+(?:\.\d+)?", " ".join(cells))]
        assert numbers and all(math.isfinite(n) for n in numbers), (variant, cells)
        assert cells[2] in (("—",) if variant == "none" else ("yes", "no"))

    raw = json.loads((out / "results.json").read_text())
    assert {(r["variant"], r["seed"]) for r in raw["runs"]} == {
        (v, s) for v in variants for s in (0, 1)
    }
    assert raw["models"]["ecab"]["attention_kwargs"] == {"fusion": "sum"}
    for run in raw["runs"]:
        assert 0 <= run["test_acc"] <= 1 and len(run["val_acc"]) == 1
        assert run["macs"] > 0 and run["latency_ms"] > 0 and run["train_images_per_s"] > 0
        assert bool(run["attention"]) == (run["variant"] != "none")
    se = next(r for r in raw["runs"] if r["variant"] == "se")
    assert all(len(per_image) == 8 for per_image in se["attention"].values())

    for name in PNGS:
        path = out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert 5_000 < path.stat().st_size < 5_000_000, name
        with Image.open(path) as image:
            image.verify()
