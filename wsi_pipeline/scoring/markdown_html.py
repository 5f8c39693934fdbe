"""The run's Markdown report as a self-contained ``report.html`` (plots embedded, opens offline).

The score stage writes ``report.md`` (:mod:`wsi_pipeline.scoring.report`); this reads it back as a
:class:`~wsi_pipeline.scoring.document.Document` and renders it with every linked plot embedded,
so the HTML always says exactly what the Markdown says. It understands the subset of Markdown the
reports write: headings, ``- `` lists (``- **name**: value`` as facts), pipe tables, images on
their own line, ``> `` notes, and paragraphs. When the run's facts name a demo encoder, the page
opens with a banner saying so: numbers from a demo encoder must not be quoted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from wsi_pipeline.atomic import atomic_write_text
from wsi_pipeline.scoring.banners import DEMO_BANNER
from wsi_pipeline.scoring.document import (
    Banner,
    Block,
    Bullets,
    Document,
    Facts,
    Heading,
    Image,
    Paragraph,
    Table,
    to_html,
)

#: The HTML report beside report.md.
HTML_REPORT_FILE = "report.html"

_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<link>[^)]+)\)$")
_FACT = re.compile(r"^\*\*(?P<name>.+?)\*\*: (?P<value>.*)$")
_HEADING = re.compile(r"^(?P<marks>#{1,6}) (?P<text>.*)$")


def _cells(line: str) -> list[str]:
    # Split on '|' not escaped as '\|' (how the reports escape a '|' inside a cell).
    inner = line.strip()[1:-1] if line.strip().endswith("|") else line.strip()[1:]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def markdown_document(text: str, base: str | os.PathLike[str]) -> Document:
    """Read a report's Markdown into blocks; image links are resolved against ``base``.

    Parameters
    ----------
    text
        The Markdown of a report.
    base
        The report's folder (images are linked relative to it).

    Returns
    -------
    Document
        Its title (the first ``# `` heading) and blocks.
    """
    lines = text.splitlines()
    title = "Report"
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
            continue
        heading = _HEADING.match(line)
        image = _IMAGE.match(line.strip())
        if heading:
            level = len(heading["marks"])
            if level == 1 and title == "Report" and not blocks:
                title = heading["text"]
            else:
                blocks.append(Heading(heading["text"], max(level, 2)))
            i += 1
        elif image:
            blocks.append(Image(Path(base) / image["link"], image["link"], image["alt"]))
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1
            body = [_cells(r) for r in rows[2:]] if len(rows) > 1 and set(rows[1].replace("|", "").strip()) <= {"-", ":", " "} else [
                _cells(r) for r in rows[1:]]
            blocks.append(Table(_cells(rows[0]), body))
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(lines[i][2:].strip())
                i += 1
            facts = [_FACT.match(item) for item in items]
            if all(facts):
                blocks.append(Facts([(m["name"], m["value"]) for m in facts if m]))
            else:
                blocks.append(Bullets(items))
        elif line.startswith("> "):
            blocks.append(Banner(line[2:].strip().strip("*")))
            i += 1
        else:
            paragraph = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#|\||- |> |!\[)", lines[i]):
                paragraph.append(lines[i].strip())
                i += 1
            blocks.append(Paragraph(" ".join(paragraph)))
    demo = any(isinstance(b, Facts) and any("DEMO" in value for _, value in b.items) for b in blocks)
    # The run's report.md opens with its own banner lines (scoring.banners); older reports do not.
    if demo and not any(isinstance(b, Banner) and b.text == DEMO_BANNER for b in blocks):
        blocks.insert(0, Banner(DEMO_BANNER))
    return Document(title, blocks)


def write_html_report(markdown_path: str | os.PathLike[str]) -> Path:
    """Write ``report.html`` beside a Markdown report, plots embedded.

    Parameters
    ----------
    markdown_path
        The report's Markdown file (its images are linked relative to its folder).

    Returns
    -------
    Path
        The HTML file (written atomically).
    """
    path = Path(markdown_path)
    document = markdown_document(path.read_text(encoding="utf-8"), path.parent)
    return atomic_write_text(path.parent / HTML_REPORT_FILE, to_html(document))
