"""A checkpoint folder as a Hugging Face-style model folder: `config.json` and a `README.md` card.

Both are rendered from the checkpoint's own metadata (`meta.json`), so the card never says
anything the checkpoint does not record. `render_card` and `model_config` are pure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ecab_tune.checkpoint import Meta
from ecab_tune.data.imagefolder import TEST_FRACTION
from ecab_tune.models import resolved_options
from ecab_tune.models.registry import HEAD

CARD, CONFIG = "README.md", "config.json"
# Metric prefixes and the split each one was measured on, in the card's words.
SPLITS = {
    "val_": "validation: a stratified held-out share of the training images (a search selects "
    "on it)",
    "test_": "test: the dataset's own test split (an image folder without one: a fixed "
    f"{TEST_FRACTION:.0%} held out); never used for selection",
    "train_": "training images (augmented batches)",
}
COUNTS = {"test_images"}  # sizes of a split, shown with the data, not scores


def model_config(meta: Meta) -> dict[str, Any]:
    """`config.json`: the model, its every attention option, labels and preprocessing."""
    m, d = meta.model, meta.data
    return {
        "library_name": "ecab_tune",
        "architecture": m.name,
        "attention": m.attention,
        "attention_options": resolved_options(m.attention, m.attention_kwargs),
        "width": m.width,
        "num_classes": m.num_classes,
        "in_chans": m.in_chans,
        "image_size": [d.height, d.width],
        "id2label": {str(i): c for i, c in enumerate(d.classes)},
        "label2id": {c: i for i, c in enumerate(d.classes)},
        "preprocessing": {
            "input": "uint8 N×C×H×W",
            "scale": 1 / 255,
            "mean": list(d.mean),
            "std": list(d.std),
        },
        "dataset": d.name,
    }


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, dict)):
        return f"`{json.dumps(value)}`"
    return str(value).replace("|", "\\|")


def _attention_phrase(attention: str) -> str:
    """Where the model's attention sits: `none` has none, ecab_head's is its classifier."""
    if attention == "none":
        return "without attention"
    if attention == HEAD:
        return (
            "with ECAB's head (every conv descriptor and the pooled final feature map feed the "
            "classifier; no gates in the blocks)"
        )
    return f"with the `{attention}` gate in every residual block"


def _yaml_list(values: list[str]) -> str:
    """A front-matter list, quoted where YAML needs it: an image folder's dataset name is its
    path, whose `, ` or `: ` would split it or break the front matter."""
    return yaml.safe_dump(values, default_flow_style=True, allow_unicode=True, width=1 << 30)[:-1]


def _split_of(metric: str) -> str | None:
    return next((split for prefix, split in SPLITS.items() if metric.startswith(prefix)), None)


def render_card(meta: Meta) -> str:
    """The model card (Markdown with Hugging Face front matter) of one checkpoint."""
    m, d, metrics, extra = meta.model, meta.data, meta.metrics, meta.extra
    search = extra.get("search") or {}
    dataset = d.name
    lines = [
        "---",
        "library_name: ecab_tune",
        "pipeline_tag: image-classification",
        f"tags: {_yaml_list(['image-classification', 'channel-attention', m.attention, m.name])}",
        f"datasets: {_yaml_list([dataset])}",
        "metrics: [accuracy]",
        "---",
        "",
        f"# {m.name} with {m.attention} attention on {dataset}",
        "",
        f"A {m.name} (width ×{m.width}) {_attention_phrase(m.attention)}, classifying "
        f"{d.channels}×{d.height}×{d.width} images into {len(d.classes)} classes."
        + (f" Exported by the search `{search['name']}`." if search.get("name") else ""),
        "",
        "## Model",
        "",
        *_table(
            ("field", "value"),
            [
                ("architecture", m.name),
                ("width multiplier", m.width),
                ("attention", m.attention),
                ("parameters", metrics.get("num_params", "not recorded")),
                (
                    "input",
                    f"uint8 {d.channels}×{d.height}×{d.width}, scaled to [0, 1], then "
                    f"(x − mean) / std with mean {list(d.mean)}, std {list(d.std)}",
                ),
                ("classes", ", ".join(d.classes)),
            ],
        ),
        "",
        "Attention options (every option the gates are built with, defaults included):",
        "",
    ]
    options = resolved_options(m.attention, m.attention_kwargs)
    lines += _table(("option", "value"), sorted(options.items())) if options else ["none"]
    lines += ["", "## Data and splits", ""]
    data_cfg = search.get("data") or extra.get("data_config") or {}
    split_rows = [("dataset", dataset)]
    if data_cfg.get("subset"):
        split_rows.append(("training images", f"a stratified subset of {data_cfg['subset']}"))
    if "val_fraction" in data_cfg:
        split_rows.append(
            ("validation", f"{data_cfg['val_fraction']:.0%} of the training images, stratified")
        )
    if "test_images" in metrics:
        split_rows.append(("test", f"{metrics['test_images']} images of the test split"))
    split_rows.append(
        (
            "augmentation",
            f"random crop (padding {d.crop_padding})"
            + (" and horizontal flip" if d.flip else "")
            + ", training only",
        )
    )
    lines += _table(("what", "value"), split_rows)
    lines += ["", "## Metrics", ""]
    scored = [(k, v, _split_of(k)) for k, v in metrics.items() if _split_of(k) and k not in COUNTS]
    lines += _table(("metric", "value", "split"), scored) if scored else ["none recorded"]
    lines += _search_section(meta)
    lines += _use_section(meta)
    return "\n".join(lines) + "\n"


def _search_section(meta: Meta) -> list[str]:
    extra, metrics = meta.extra, meta.metrics
    search = extra.get("search") or {}
    lines = ["", "## How it was produced", ""]
    rows = [
        (k, search[k])
        for k in ("name", "searcher", "scheduler", "num_samples", "max_epochs", "seed")
        if k in search
    ]
    rows += [(k, extra[k]) for k in ("space", "status", "partial") if k in extra]
    rows += [(k, metrics[k]) for k in ("trial_id", "epochs") if k in metrics]
    lines += _table(("search", "value"), rows) if rows else ["Not by a search."]
    if extra.get("partial"):
        lines += ["", "**Partial:** the search was interrupted; this is the best trial so far."]
    params = extra.get("params") or {}
    if params:
        lines += ["", "The chosen trial's parameters:", ""]
        lines += _table(("parameter", "value"), sorted(params.items()))
    if meta.train is not None:
        recipe = {
            k: getattr(meta.train, k)
            for k in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "seed")
        }
        lines += ["", "Training recipe:", "", *_table(("field", "value"), list(recipe.items()))]
    return lines


def _use_section(meta: Meta) -> list[str]:
    d = meta.data
    return [
        "",
        "## Use",
        "",
        "```",
        "python -m serve --model <this folder>            # HTTP: /predict, /model",
        "python -m ecab_tune.export <this folder> --format onnx --out <dir>",
        "```",
        "",
        "Weights are `model.safetensors`; `meta.json` rebuilds the model "
        "(`ecab_tune.checkpoint.load_model`).",
        "",
        "## Intended use and limits",
        "",
        f"- A research model for comparing channel-attention gates on {d.name}; not evaluated "
        "for any decision about people, and not for images unlike its training data.",
        f"- It takes {d.channels}-channel images resized to {d.height}×{d.width} and always "
        f"answers with one of its {len(d.classes)} classes, also for images of none of them.",
        "- Its metrics come from one training run (one seed) of one trial: differences between "
        "attention variants smaller than seed-to-seed spread are not shown by this card.",
        "- The gates' channel weights say which channels a block keeps, not where in the image "
        "the model looks.",
    ]


def write_card(folder: str | Path, meta: Meta) -> None:
    """Write `config.json` and `README.md` beside a checkpoint's weights."""
    folder = Path(folder)
    (folder / CONFIG).write_text(json.dumps(model_config(meta), indent=2) + "\n")
    (folder / CARD).write_text(render_card(meta))
