"""Shared by the study tests: a small study file, and whether Debian's Fashion-MNIST is here."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not FMNIST.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (scripts/setup.sh installs it)",
)
PNGS = ("accuracy_vs_params.png", "learning_curves.png", "paired_differences.png")


# ---------------------------------------------------------------- the study file and CLI
def write_study(folder: Path, **changes) -> Path:
    study = {
        "name": "tiny",
        "model": "resnet8",
        "width": 0.25,
        "data": {"dataset": "fashion-mnist", "subset": 300, "val_fraction": 0.2},
        "train": {"epochs": 1, "batch_size": 64, "warmup_epochs": 0.5},
        "seeds": 2,
        "baseline": "none",
        "focus": "ecab",
        "arms": {
            "none": {"attention": "none"},
            "se": {"attention": "se", "options": {"reduction": 4}},
            "ecab": {"attention": "ecab", "options": {"fusion": "sum", "layers": "last2"}},
        },
        "ablations": {
            "seeds": 2,
            "arms": {"ecab-block": {"attention": "ecab", "options": {"layers": "block"}}},
        },
        "convergence": {"arm": "none", "seeds": 1, "epochs": 2},
    }
    study.update(changes)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path
