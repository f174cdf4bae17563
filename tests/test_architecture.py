"""The layout's rules (issue #12): imports point one way, no module grows past 400 lines, and
only the serve CLI starts a runner."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ecab_tune", "serve")
MAX_LINES = 400
# Only the serve CLI starts a runner; the app and the library never import one.
MAY_IMPORT_RUNNERS = ("serve.__main__", "serve.runners")


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
