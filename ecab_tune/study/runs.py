"""`runs.jsonl`: one JSON line per finished run, appended as each lands, read back to resume."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RUNS = "runs.jsonl"
FINISHED = ("completed", "diverged")  # a diverged run is a result too: it is not retried


def read_runs(folder: str | Path) -> list[dict[str, Any]]:
    """Every complete line; a torn last line (a kill mid-write) is skipped, not fatal."""
    path = Path(folder) / RUNS
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            print(f"[study] {path}:{number}: skipping a torn line", flush=True)
    return rows


def append_run(folder: str | Path, row: dict[str, Any]) -> None:
    """Append one line and flush it to disk: a killed study loses only the runs in flight."""
    path = Path(folder) / RUNS
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
    with path.open("a") as f:
        # After a kill mid-write the last line is torn: end it, or this row would join it.
        f.write(("\n" if torn else "") + json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def row_id(arm: str, seed: int, epochs: int) -> tuple[str, int, int]:
    return arm, seed, epochs


def finished(rows: list[dict[str, Any]]) -> dict[tuple[str, int, int], dict[str, Any]]:
    return {
        row_id(r["arm"], r["seed"], r["epochs"]): r for r in rows if r.get("status") in FINISHED
    }
