"""A report as a list of blocks, written once and rendered twice: Markdown and self-contained HTML.

The HTML embeds every image as a base64 ``data:`` URI and carries its own style sheet, so the
file opens offline, can be mailed or attached to a submission alone, and never shows a broken
link when the plots folder is not beside it. The Markdown links the image files instead.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    """A section title; ``level`` 1 is the document title."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    """Running text."""

    text: str


@dataclass(frozen=True)
class Facts:
    """A list of ``name: value`` facts."""

    items: Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Bullets:
    """A bulleted list."""

    items: Sequence[str]


@dataclass(frozen=True)
class Table:
    """A table of text cells; ``header`` names the columns."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True)
class Image:
    """A PNG figure: ``path`` on disk, ``link`` as the Markdown refers to it (relative to the report)."""

    path: Path
    link: str
    alt: str


@dataclass(frozen=True)
class Banner:
    """A warning the reader must not miss (e.g. a synthetic cohort or a demo encoder)."""

    text: str


Block = Heading | Paragraph | Facts | Bullets | Table | Image | Banner


@dataclass
class Document:
    """The blocks of a report, in order."""

    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Document:
        """Append blocks; returns the document."""
        self.blocks.extend(blocks)
        return self


def _md_cell(text: object) -> str:
    # A '|' inside a cell would split it; a newline would end the table row.
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(document: Document) -> str:
    """The document as Markdown (images as links to their files)."""
    lines = [f"# {document.title}", ""]
    for block in document.blocks:
        if isinstance(block, Heading):
            lines += [f"{'#' * block.level} {block.text}", ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Banner):
            lines += [f"> **{block.text}**", ""]
        elif isinstance(block, Facts):
            lines += [f"- **{_md_cell(k)}**: {_md_cell(v)}" for k, v in block.items] + [""]
        elif isinstance(block, Bullets):
            lines += [f"- {_md_cell(item)}" for item in block.items] + [""]
        elif isinstance(block, Table):
            lines += ["| " + " | ".join(_md_cell(h) for h in block.header) + " |", "|" + "---|" * len(block.header)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows] + [""]
        elif isinstance(block, Image):
            lines += [f"![{block.alt}]({block.link})", ""]
    return "\n".join(lines)


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3rem; }
h2 { margin-top: 2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
.banner { background: #fde8e8; border: 2px solid #b91c1c; color: #7f1d1d; padding: .6rem 1rem; font-weight: bold; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; width: 40rem; border: 1px solid #ddd; }
figcaption { font-size: .85rem; color: #555; }
code { background: #f4f4f4; padding: 0 .2rem; }
"""


def _inline(text: str) -> str:
    """Escaped text with the two inline marks reports use: **bold** and `code`."""
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def _image_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def to_html(document: Document) -> str:
    """The document as one self-contained HTML page (style and images inside; no network needed)."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{e(document.title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>", f"<h1>{e(document.title)}</h1>"]
    for block in document.blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 2), 6)
            parts.append(f"<h{level}>{e(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Banner):
            parts.append(f'<div class="banner" role="alert">{_inline(block.text)}</div>')
        elif isinstance(block, Facts):
            parts.append("<ul>" + "".join(f"<li><b>{_inline(k)}</b>: {_inline(v)}</li>" for k, v in block.items) + "</ul>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{e(h)}</th>" for h in block.header)
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Image):
            if Path(block.path).is_file():
                parts.append(f'<figure><img src="{_image_uri(block.path)}" alt="{e(block.alt)}"><figcaption>{e(block.alt)}'
                             "</figcaption></figure>")
            else:
                parts.append(f"<p><i>{e(block.alt)}: not available.</i></p>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
