"""Validated configuration (`ecab_tune.config`): values checked by name, the strict from-mapping
helper, and CLI flags generated from the fields."""

from __future__ import annotations

import argparse
import importlib
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Literal

import pytest

from ecab_tune.config import (
    DataConfig,
    TrainConfig,
    add_arguments,
    command_parser,
    from_args,
    from_dict,
    option_help,
    out_folder,
    parse_option,
)
from ecab_tune.data import DataInfo
from ecab_tune.models import ModelConfig


@pytest.mark.parametrize(
    "field,value",
    [
        ("epochs", 0),
        ("lr", -1.0),
        ("batch_size", 1),
        ("momentum", 1.0),
        ("schedule", "step"),
        ("warmup_epochs", 50.0),
        ("label_smoothing", 1.0),
        ("seed", -1),  # numpy refused it once the data had loaded
        ("seed", 2**32),
    ],
)
def test_train_config_rejects_bad_values_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


@pytest.mark.parametrize(
    "cls,field,value,expected",
    [
        (TrainConfig, "batch_size", 64.5, "an integer"),  # passed the range check
        (TrainConfig, "nesterov", "false", "true or false"),  # trained as True
        (TrainConfig, "precision", "bf15", "auto, bf16, fp16 or fp32"),
        (TrainConfig, "weight_decay", math.inf, "a finite number"),
        (TrainConfig, "lr", True, "a finite number"),
        (DataConfig, "val_fraction", "0.1", "a finite number"),
        (DataConfig, "subset", True, "an integer"),
        (DataConfig, "dataset", 3, "a string"),
    ],
)
def test_configs_from_files_refuse_values_of_another_type(cls, field, value, expected):
    # YAML and JSON files (a search space, a study, search.json) reach these dataclasses as
    # they are: no argparse `type=` converts them first.
    with pytest.raises(
        ValueError, match=f"^{re.escape(f'{field}={value!r} is invalid: expected {expected}')}$"
    ):
        cls(**{field: value})
    assert cls(**{"subset": None} if cls is DataConfig else {"lr": 1}) is not None  # int as float


def test_from_dict_is_strict_and_says_where():
    assert from_dict(TrainConfig, {"lr": 0.2}) == TrainConfig(lr=0.2)
    with pytest.raises(
        ValueError, match=r"unknown TrainConfig key\(s\) in s\.yaml: lr_max; allowed"
    ):
        from_dict(TrainConfig, {"lr_max": 0.2}, where="s.yaml")
    with pytest.raises(TypeError, match="must be a mapping, got list"):
        from_dict(DataConfig, [("subset", 3)])
    with pytest.raises(KeyError, match="data info lacks key"):
        from_dict(DataInfo, {"name": "x"}, what="data info")


def test_parse_option_reads_yaml_scalars_and_refuses_other_shapes():
    assert parse_option("reduction=8") == ("reduction", 8)
    assert parse_option("project=false") == ("project", False)
    assert parse_option(" layers = [-1, -3]") == ("layers", [-1, -3])
    for bad in ("fusion", "=sum", "x=[1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_option(bad)


def test_generated_flags_state_each_default_once_and_build_the_config():
    parser = argparse.ArgumentParser()
    add_arguments(parser, ModelConfig, skip=("num_classes", "in_chans"))
    add_arguments(parser, TrainConfig)
    help_text = " ".join(parser.format_help().split())
    assert "architecture (default: resnet20)" in help_text
    assert "peak learning rate (after warm-up) (default: 0.1)" in help_text
    for action in parser._actions[1:]:  # after --help
        assert action.help.count("(default:") == (action.dest != "attention_kwargs"), action.dest
    args = parser.parse_args(
        ["--model", "resnet8", "--attention", "ecab", "--attn", "fusion=sum", "--lr", "0.2"]
    )
    cfg = from_args(ModelConfig, args)
    assert cfg == ModelConfig("resnet8", "ecab", {"fusion": "sum"})
    assert from_args(TrainConfig, args) == TrainConfig(lr=0.2)


def test_a_help_that_explains_its_default_is_not_given_another():
    @dataclass(frozen=True)
    class Named:
        name: str | None = field(default=None, metadata=option_help("run name (default: a date)"))

    parser = argparse.ArgumentParser()
    add_arguments(parser, Named)
    assert "(default: a date)" in parser.format_help()
    assert "(default: None)" not in parser.format_help()


def test_command_parser_shows_the_docstring_the_note_wrapped_and_the_examples():
    doc = "`python -m tool X`: does a thing.\n\nLonger text,\n  kept as written.\n"
    parser = command_parser("python -m tool", doc, "python -m tool a", note="word " * 30)
    text = parser.format_help()
    assert "`python -m tool X`: does a thing.\n\nLonger text,\n  kept as written." in text
    note_lines = [line for line in text.splitlines() if line.startswith("word")]
    assert len(note_lines) == 2 and all(len(line) <= 96 for line in note_lines)
    assert text.endswith("Examples:\n  python -m tool a\n")
    assert command_parser("python -m tool", doc).epilog is None


COMMANDS = [
    "ecab_tune.train",
    "ecab_tune.search.__main__",
    "ecab_tune.compare",
    "ecab_tune.report",
    "ecab_tune.dashboard",
    "ecab_tune.export.__main__",
    "serve.__main__",
]


@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_has_help_with_examples_of_itself(module: str):
    parser = importlib.import_module(module).build_parser()
    examples = parser.epilog.split("Examples:\n")[1].splitlines()
    assert examples and all(line.startswith(f"  {parser.prog} ") for line in examples), examples
    assert parser.description.startswith(f"`{parser.prog}")


@pytest.mark.parametrize("module", COMMANDS)
def test_every_choice_a_flag_lists_is_accepted(module: str):
    # argparse converts with `type` first, then looks the result up in `choices`.
    parser = importlib.import_module(module).build_parser()
    for action in parser._actions:
        # A typing form (`Literal[...]`) as the converter refuses every value it is given.
        assert typing.get_origin(action.type) is None, action.option_strings
        for choice in action.choices or ():
            value = action.type(str(choice)) if action.type else str(choice)
            assert value in action.choices, (action.option_strings, choice)


def test_an_optional_literal_field_is_a_flag_with_choices():
    @dataclass(frozen=True)
    class Pick:
        way: Literal["a", "b"] | None = None

    parser = argparse.ArgumentParser()
    add_arguments(parser, Pick)
    assert from_args(Pick, parser.parse_args(["--way", "b"])) == Pick("b")
    assert from_args(Pick, parser.parse_args([])) == Pick()
    with pytest.raises(SystemExit):
        parser.parse_args(["--way", "c"])


@pytest.mark.parametrize("module", COMMANDS)
def test_every_out_flag_refuses_a_file_before_any_work(module: str, tmp_path):
    parser = importlib.import_module(module).build_parser()
    for action in (a for a in parser._actions if "--out" in a.option_strings):
        assert action.type is out_folder
    (tmp_path / "a file").write_text("mine")
    assert out_folder(str(tmp_path / "new")) == tmp_path / "new"
    with pytest.raises(argparse.ArgumentTypeError, match="is a file; expected a folder"):
        out_folder(str(tmp_path / "a file"))


def test_an_out_folder_under_a_file_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """`--out FILE/sub` cannot be created: refused at parse time, not after an epoch's work."""
    from ecab_tune import train

    (tmp_path / "a file").write_text("mine")
    with pytest.raises(argparse.ArgumentTypeError, match=r"a file is a file; expected a folder"):
        out_folder(str(tmp_path / "a file" / "sub" / "run"))
    monkeypatch.setattr(train, "load_data", lambda *a: pytest.fail("data read"))
    with pytest.raises(SystemExit) as exit_:
        train.main(["--out", str(tmp_path / "a file" / "run")])
    assert exit_.value.code == 2 and "--out" in capsys.readouterr().err
    assert (tmp_path / "a file").read_text() == "mine"
