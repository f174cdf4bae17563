"""The docs' commands match the code: every `python -m` line in a tracked Markdown file uses
only flags its module's parser knows, so a renamed flag cannot leave a README behind."""

import argparse
import importlib
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUR_MODULES = ("ecab_tune", "serve")
COMMAND = re.compile(r"python -m ([\w.]+)([^\n`|;&#]*)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def commands(text: str) -> list[tuple[str, list[str]]]:
    """(module, flags) for every `python -m` command of ours; shell line continuations joined."""
    text = re.sub(r"\\\n\s*", " ", text)
    return [
        (module, FLAG.findall(rest))
        for module, rest in COMMAND.findall(text)
        if module.split(".")[0] in OUR_MODULES
    ]


def parser_of(module: str) -> argparse.ArgumentParser:
    # `python -m pkg` runs pkg/__main__.py; a plain module is its own entry point.
    main = f"{module}.__main__"
    if importlib.util.find_spec(module).submodule_search_locations is not None:
        module = main
    return importlib.import_module(module).build_parser()


def unknown_flags(text: str) -> list[str]:
    bad = []
    for module, flags in commands(text):
        known = {o for action in parser_of(module)._actions for o in action.option_strings}
        bad += [f"python -m {module} {flag}" for flag in flags if flag not in known]
    return bad


def markdown_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [ROOT / name for name in listed.stdout.split()]


def test_the_readme_is_checked():
    found = {module for module, _ in commands((ROOT / "README.md").read_text())}
    assert {"ecab_tune.search", "ecab_tune.compare", "ecab_tune.train", "serve"} <= found


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_flags_exist(path: Path):
    assert unknown_flags(path.read_text()) == []


def test_a_stale_flag_is_caught():
    text = (
        "```bash\npython -m ecab_tune.search --space bridge \\\n    --num-trial 4  # typo\n```\n"
        "`python -m serve --port 8000` and `python -m ecab_tune.export ckpt --fromat onnx`\n"
    )
    assert unknown_flags(text) == [
        "python -m ecab_tune.search --num-trial",
        "python -m ecab_tune.export --fromat",
    ]
