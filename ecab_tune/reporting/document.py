"""A report as a list of blocks (headings, paragraphs, bullets, tables, images), rendered to
Markdown or to a standalone HTML page; and the few formatters the report's text shares."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    file: str  # relative to the report
    alt: str


Block = Heading | Paragraph | Bullets | Table | Image


def cell(value: Any) -> str:
    """A value as a table cell: floats to 4 decimals, or 3 significant digits when tiny or huge."""
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 else f"{value:.3g}"
    return str(value)


def epochs_text(n: int) -> str:
    return f"{n} epoch" + "s" * (n != 1)


def duration(seconds: float) -> str:
    """`45s`, `3m05s`, `2h07m`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def to_markdown(blocks: Sequence[Block]) -> str:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            lines = [row(block.header), row(["---"] * len(block.header))]
            parts.append("\n".join(lines + [row(r) for r in block.rows]))
        else:
            parts.append(f"![{block.alt}]({block.file})")
    return "\n\n".join(parts) + "\n"


def to_html(blocks: Sequence[Block], title: str) -> str:
    e = html.escape
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{e(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{e(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{e(c)}</th>" for c in block.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in block.rows
            )
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        else:
            parts.append(f'<img src="{e(block.file)}" alt="{e(block.alt)}">')
    style = (
        "body{font-family:sans-serif;max-width:60rem;margin:auto}img{max-width:100%}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{style}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def splice(document: str, tag: str, body: str) -> str:
    """`document` with what stands between `<!-- begin TAG -->` and `<!-- end TAG -->` replaced
    by `body`: generated figures inside a hand-written page (the README's study table)."""
    begin, end = f"<!-- begin {tag} -->", f"<!-- end {tag} -->"
    if document.count(begin) != 1 or document.count(end) != 1:
        raise ValueError(f"needs one {begin} ... {end} block (where the generated text goes)")
    head, rest = document.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{body.strip()}\n{end}{tail}"


def check_block(path: Path, tag: str) -> None:
    """Refuse, before any work, a file whose block `rebuild_block` could not rebuild."""
    try:
        splice(path.read_text(), tag, "")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def rebuild_block(path: Path, tag: str, body: str) -> None:
    path.write_text(splice(path.read_text(), tag, body))
