"""serve/ imports point one way: no cycles, and no library module imports a runner."""

from __future__ import annotations

import ast
from pathlib import Path

SERVE = Path(__file__).resolve().parents[2] / "serve"
# Whoever runs the app (and the tests' server helper) may import the runners; the app may not.
MAY_IMPORT_RUNNERS = ("serve.__main__", "serve.runners")


def module_name(path: Path) -> str:
    parts = path.relative_to(SERVE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The serve modules `path` imports anywhere (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in SERVE.rglob("*.py")}
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


def test_only_main_imports_the_runners() -> None:
    for name, deps in graph().items():
        if not name.startswith(MAY_IMPORT_RUNNERS):
            assert not {d for d in deps if d.startswith("serve.runners")}, name
