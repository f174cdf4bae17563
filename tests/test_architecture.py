"""The layout's rules (issue #12): imports point one way, no module grows past 400 lines, only
the serve CLI starts a runner, and every third-party import is a declared dependency."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ecab_tune", "serve")
MAX_LINES = 400
# Only the serve CLI starts a runner; the app and the library never import one.
MAY_IMPORT_RUNNERS = ("serve.__main__", "serve.runners")
# Test support shipped in the package, documented as needing the dev extras.
DEV_ONLY = {"serve.testing"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """The modules `path` imports anywhere (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def graph() -> dict[str, set[str]]:
    paths = sources()
    return {name: (imports(path) & set(paths)) - {name} for name, path in paths.items()}


def test_no_import_cycles() -> None:
    edges = graph()
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for dep in sorted(edges[name]):
            visit(dep, (*path, name))
        done.add(name)

    for name in sorted(edges):
        visit(name, ())


@pytest.mark.parametrize("name", sorted(sources()))
def test_no_module_is_over_400_lines(name: str) -> None:
    lines = len(sources()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines"


def test_only_the_serve_cli_imports_the_runners() -> None:
    for name, deps in graph().items():
        if not name.startswith(MAY_IMPORT_RUNNERS):
            assert not {d for d in deps if d.startswith("serve.runners")}, name


def declared(extras: bool) -> set[str]:
    """Distributions pyproject names: the dependencies, and with `extras` every extra but dev."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    if extras:
        optional = project["optional-dependencies"]
        reqs += [r for name, group in optional.items() if name != "dev" for r in group]
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_every_third_party_import_is_a_declared_dependency() -> None:
    """A plain `pip install` runs every command: nothing leans on a dev-only or transitive
    package (the study's report once imported scipy, which only scikit-learn, a dev extra,
    brought). Imports inside functions may come from an extra (ONNX, trackers)."""
    providers = importlib.metadata.packages_distributions()
    required, optional = declared(extras=False), declared(extras=True)
    missing = []
    for name, path in sources().items():
        if name in DEV_ONLY:
            continue
        tree = ast.parse(path.read_text())
        top = {n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            else:
                continue
            for root in {m.split(".")[0] for m in modules} - {*PACKAGES, *sys.stdlib_module_names}:
                dists = {d.lower().replace("_", "-") for d in providers.get(root, [])}
                if not dists & (required if node in top else optional):
                    missing.append(f"{name}: {root} ({', '.join(sorted(dists)) or 'absent'})")
    assert not missing, missing
