"""What a search leaves to serve: its best trial as `best/`, and with several objectives each
Pareto-optimal trial as `pareto/<k>/`, each a self-contained model folder re-scored on val and
test."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from ecab_tune import checkpoint, experiment
from ecab_tune.config import TrainConfig, to_dict
from ecab_tune.data import Splits
from ecab_tune.engine import evaluate
from ecab_tune.experiment import EXPORT_DIR, PARETO_DIR, SPACE_COPY, TRIAL_PREFIX
from ecab_tune.reporting.cost import count_params
from ecab_tune.reporting.model_card import write_card
from ecab_tune.search.config import SearchConfig
from ecab_tune.search.pareto import pareto_members
from ecab_tune.search.results import TrialRow
from ecab_tune.search.space import SearchSpace


def export_best(
    grid: Any,
    cfg: SearchConfig,
    space: SearchSpace,
    splits: Splits,
    table: list[TrialRow],
    partial: bool = False,
) -> Path:
    """Copy the best trial's best checkpoint out as a self-contained, servable folder."""
    metric, mode = cfg.primary.metric, cfg.primary.mode
    best = grid.get_best_result(metric, mode, scope="all", filter_nan_and_inf=True)
    chosen = best.get_best_checkpoint(metric, mode) or best.checkpoint
    if chosen is None:
        raise RuntimeError("no trial produced a checkpoint; nothing to export")
    out = cfg.experiment_dir / EXPORT_DIR
    return export_trial(best, chosen, cfg, space, splits, table, out, partial=partial)


def export_trial(
    result: Any,
    chosen: Any,
    cfg: SearchConfig,
    space: SearchSpace,
    splits: Splits,
    table: list[TrialRow],
    out: Path,
    *,
    partial: bool = False,
    extra_metrics: dict[str, Any] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """One trial's checkpoint `chosen`, re-scored on val and test, as a servable folder `out`."""
    with chosen.as_directory() as folder:
        model, meta = checkpoint.load_model(folder)
    # The trial's own recipe, which a trial's checkpoint always records.
    batch = (meta.train or TrainConfig()).eval_batch_size
    val_loss, val_acc = evaluate(model, splits.val or splits.test, splits.info, batch)
    test_loss, test_acc = evaluate(model, splits.test, splits.info, batch)
    trial_id = Path(result.path).name.removeprefix(TRIAL_PREFIX)
    metrics = {
        "val_acc": val_acc,
        "val_loss": val_loss,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "epochs": meta.metrics.get("epoch"),
        "trial_id": trial_id,
        "num_params": count_params(model),
        "test_images": len(splits.test),
        **(extra_metrics or {}),
    }
    status = next((r.status for r in table if r.trial_id == trial_id), None)
    extra = {
        "search": to_dict(cfg),
        "space": space.name,
        "params": dict(result.config),
        "status": status,  # the trial's, in experiment's status words
        "partial": partial,  # True: the search was interrupted before it finished
        **(extra_meta or {}),
    }
    shutil.rmtree(out, ignore_errors=True)
    exported = dataclasses.replace(meta, metrics=metrics, extra=extra)
    checkpoint.save(out, model, exported)
    shutil.copyfile(space.path, out / SPACE_COPY)
    write_card(out, exported)  # config.json + README.md: best/ reads as a model folder
    return out


def export_pareto(
    grid: Any,
    cfg: SearchConfig,
    space: SearchSpace,
    splits: Splits,
    table: list[TrialRow],
) -> list[dict[str, Any]]:
    """Every Pareto-optimal full-budget trial as `pareto/<k>/` (k = 0 is the best on the first
    objective), each as servable as best/; one row per member for the summary."""
    objectives = cfg.objective_list
    finished = {r.trial_id for r in table if r.status == experiment.FINISHED}
    members = pareto_members(list(grid), objectives, finished)
    root = cfg.experiment_dir / PARETO_DIR
    shutil.rmtree(root, ignore_errors=True)
    rows = []
    for k, member in enumerate(members):
        out = export_trial(
            member.result, member.checkpoint, cfg, space, splits, table, root / str(k),
            extra_metrics={m: v for m, v in member.values.items() if not m.startswith("val_")},
            extra_meta={"pareto": {"rank": k, "objectives": member.values}},
        )  # fmt: skip
        rows.append({"k": k, "trial_id": checkpoint.read_meta(out).metrics["trial_id"],
                     **member.values, "path": str(out)})  # fmt: skip
    return rows
