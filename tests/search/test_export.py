import contextlib
from types import SimpleNamespace

import torch
from synthetic import make_splits

from ecab_tune import checkpoint
from ecab_tune.config import DataConfig, TrainConfig
from ecab_tune.engine import make_trainer, save_trainer
from ecab_tune.models import ModelConfig
from ecab_tune.search import SearchConfig, load_space
from ecab_tune.search import export as export_module
from ecab_tune.search.results import TrialRow


def test_an_exported_trial_is_scored_at_its_recipes_eval_batch_size(tmp_path, monkeypatch):
    splits = make_splits()
    model_cfg = ModelConfig("resnet8", "ecab", width=0.25, num_classes=4, in_chans=1)
    trainer = make_trainer(model_cfg, splits, TrainConfig(eval_batch_size=7), torch.device("cpu"))
    trial_folder = save_trainer(tmp_path / "ckpt", trainer, model_cfg, metrics={"epoch": 2})
    chosen = SimpleNamespace(as_directory=lambda: contextlib.nullcontext(trial_folder))
    result = SimpleNamespace(path=str(tmp_path / "exp" / "trial_ab12"), config={"lr": 0.1})
    batches = []

    def evaluate(model, split, info, batch_size):
        batches.append(batch_size)
        return 0.5, 0.75

    monkeypatch.setattr(export_module, "evaluate", evaluate)
    cfg = SearchConfig(space="quick", name="exp", storage=str(tmp_path), data=DataConfig())
    table = [TrialRow("ab12", 0.75, epochs=2, time_s=1.0, status="finished", params={})]
    out = export_module.export_trial(
        result, chosen, cfg, load_space("quick"), splits, table, tmp_path / "exp" / "best"
    )
    assert batches == [7, 7]  # val and test, at TrainConfig.eval_batch_size
    meta = checkpoint.read_meta(out)
    assert meta.metrics["trial_id"] == "ab12" and meta.metrics["test_acc"] == 0.75
    assert meta.extra["status"] == "finished" and meta.extra["search"]["data"]["subset"] is None
