"""The model card and config.json of an exported checkpoint (`ecab_tune.reporting.model_card`)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml
from search_support import needs_fmnist
from serve_support import FASHION

from ecab_tune import checkpoint
from ecab_tune.checkpoint import Meta
from ecab_tune.config import DataConfig, TrainConfig
from ecab_tune.models import ModelConfig
from ecab_tune.reporting.model_card import model_config, render_card
from ecab_tune.search import SearchConfig, run_search

ECAB = ModelConfig("resnet8", "ecab", {"fusion": "sum"}, width=0.25, num_classes=10, in_chans=1)
SEARCHED = Meta(
    ECAB,
    FASHION,
    TrainConfig(epochs=3, lr=0.05),
    metrics={"val_acc": 0.8125, "val_loss": 0.51, "test_acc": 0.7931, "test_loss": 0.55,
             "epochs": 3, "trial_id": "ab12", "num_params": 4321, "test_images": 10000},
    extra={"search": {"name": "bridge-1", "searcher": "optuna", "scheduler": "asha",
                      "num_samples": 8, "max_epochs": 3, "seed": 0,
                      "data": {"subset": 600, "val_fraction": 0.1}},
           "space": "bridge", "params": {"lr": 0.05, "attention.fusion": "sum"},
           "status": "finished", "partial": True},
)  # fmt: skip


def row(card: str, first: str) -> str:
    """The Markdown table row whose first cell is `first`."""
    return next(line for line in card.splitlines() if line.startswith(f"| {first} |"))


def test_card_names_every_attention_option_defaults_included() -> None:
    card = render_card(SEARCHED)
    assert card.startswith("---\nlibrary_name: ecab_tune\n")
    assert "datasets: [fashion-mnist]" in card
    assert row(card, "fusion") == "| fusion | sum |"  # the checkpoint's own choice
    assert row(card, "layers") == "| layers | last2 |"  # ecab's preset
    assert row(card, "min_width") == "| min_width | 8 |"  # a default nobody set
    assert row(card, "parameters") == "| parameters | 4321 |"


def test_card_gives_each_metric_its_split_and_the_search_that_chose_it() -> None:
    card = render_card(SEARCHED)
    assert row(card, "val_acc").startswith("| val_acc | 0.8125 | validation")
    assert row(card, "test_acc").startswith("| test_acc | 0.7931 | test")
    assert "never used for selection" in row(card, "test_loss")
    assert "trial_id" in card and row(card, "trial_id") == "| trial_id | ab12 |"
    assert "10% of the training images" in row(card, "validation")
    assert "600" in row(card, "training images")
    assert "10000 images" in row(card, "test")
    assert "| test_images |" not in card  # a split's size, not a test metric
    assert row(card, "searcher") == "| searcher | optuna |"
    assert "**Partial:**" in card  # an interrupted search says so
    assert row(card, "lr") == "| lr | 0.05 |"  # the trial's parameter and the recipe agree
    assert "## Intended use and limits" in card


def front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def test_front_matter_holds_an_image_folders_path_as_one_dataset() -> None:
    # An image folder's dataset is named by its path, which may hold YAML's `, `, `: ` or ` #`.
    name = "imagefolder:/data/shoes, boots: v2 #3"
    meta = dataclasses.replace(SEARCHED, data=dataclasses.replace(FASHION, name=name))
    assert front_matter(render_card(meta))["datasets"] == [name]
    assert front_matter(render_card(SEARCHED))["tags"][2:] == ["ecab", "resnet8"]


@pytest.mark.parametrize(
    ("attention", "words"),
    [("none", "without attention"), ("ecab_head", "no gates"), ("ecab", "gate in every")],
)
def test_card_says_where_the_attention_is(attention: str, words: str) -> None:
    # `none` has no gate and ecab_head's attention is its classifier, not a gate per block.
    model = dataclasses.replace(ECAB, attention=attention, attention_kwargs={})
    summary = render_card(Meta(model, FASHION)).split("## Model")[0]
    assert words in summary
    assert ("gate in every residual block" in summary) == (attention == "ecab")


def test_card_of_a_checkpoint_no_search_made() -> None:
    card = render_card(Meta(ECAB, FASHION, metrics={"test_acc": 0.5}))
    assert "Not by a search." in card
    assert "**Partial:**" not in card and "val_acc" not in card
    assert row(card, "parameters") == "| parameters | not recorded |"


def test_config_json_holds_labels_preprocessing_and_resolved_options() -> None:
    config = model_config(SEARCHED)
    assert config["id2label"]["9"] == "Ankle boot" and config["label2id"]["Bag"] == 8
    assert config["attention_options"]["min_width"] == 8
    assert config["attention_options"]["fusion"] == "sum"
    assert config["preprocessing"]["mean"] == [0.2860]
    json.dumps(config)  # plain JSON


@needs_fmnist
def test_a_tiny_searchs_best_folder_is_a_model_folder(local_ray, tmp_path) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(
        "defaults: {model: resnet8, attention: ecab, width: 0.25, dataset: fashion-mnist,\n"
        "           max_epochs: 1, num_samples: 1, train: {batch_size: 64, warmup_epochs: 0.2}}\n"
        "params:\n  lr: {type: loguniform, low: 0.01, high: 0.1}\n"
    )
    cfg = SearchConfig(space=str(space), name="card", storage=str(tmp_path / "runs"),
                       data=DataConfig(subset=300), scheduler="fifo", dashboard=False)  # fmt: skip
    best = run_search(cfg).best_dir
    meta = checkpoint.read_meta(best)
    config = json.loads((best / "config.json").read_text())
    assert config == json.loads(json.dumps(model_config(meta)))
    card = (best / "README.md").read_text()
    assert card == render_card(meta)
    assert f"| val_acc | {meta.metrics['val_acc']:.4g} | validation" in card
    assert row(card, "name") == "| name | card |"
    assert "300" in row(card, "training images")


@pytest.mark.parametrize("key", ["val_acc", "test_acc"])
def test_card_rounds_but_keeps_the_metric(key: str) -> None:
    meta = Meta(ECAB, FASHION, metrics={key: 0.123456789})
    assert f"| {key} | 0.1235 |" in render_card(meta)
