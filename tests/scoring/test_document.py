"""Reports as documents: the self-contained HTML (sections, embedded images, nothing fetched) and its Markdown twin."""

from __future__ import annotations

import base64
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wsi_pipeline.scoring.document import (
    Banner,
    Bullets,
    Document,
    Facts,
    Heading,
    Image,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from wsi_pipeline.scoring.standalone import ScoringSettings, score_files

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Outline(HTMLParser):
    """Headings, image sources and every URL-bearing attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self._heading = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._heading = tag in ("h1", "h2", "h3")
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        self.urls += [value for name, value in attrs.items() if name in ("src", "href") and value is not None]

    def handle_data(self, data):
        if self._heading and data.strip():
            self.headings.append(data.strip())
            self._heading = False


def outline(text: str) -> Outline:
    parser = Outline()
    parser.feed(text)
    return parser


def test_blocks_render_escaped_html_and_markdown(tmp_path):
    png = tmp_path / "x.png"
    png.write_bytes(PNG_SIGNATURE + b"rest")
    doc = Document("T <1>").add(Banner("SYNTHETIC cohort"), Heading("Part"), Paragraph("a < b & c"), Facts([("k", "v|w")]),
                                 Bullets(["one"]), Table(["h1", "h2"], [["1", "2"]]), Image(png, "plots/x.png", "the x"),
                                 Image(tmp_path / "absent.png", "plots/absent.png", "missing plot"))
    page = to_html(doc)
    assert "T &lt;1&gt;" in page and "a &lt; b &amp; c" in page and 'class="banner"' in page
    assert "missing plot: not available" in page
    [src] = outline(page).images
    assert base64.b64decode(src.removeprefix("data:image/png;base64,")) == PNG_SIGNATURE + b"rest"
    markdown = to_markdown(doc)
    assert "# T <1>" in markdown and "- **k**: v\\|w" in markdown and "| 1 | 2 |" in markdown and "![the x](plots/x.png)" in markdown


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("html")
    rng = np.random.default_rng(0)
    ids = [f"P{i:02d}" for i in range(40)]
    y = np.arange(40) % 2
    pd.DataFrame({"patient_id": ids, "label": y}).to_csv(folder / "truth.csv", index=False)
    rows = [pd.DataFrame({"patient_id": ids, "model": m, "score": 1 / (1 + np.exp(-(rng.normal(0, 1, 40) + k * (y - 0.5) * 2)))})
            for k, m in ((1.5, "abmil"), (0.5, "meanpool"))]
    pd.concat(rows).to_csv(folder / "preds.csv", index=False)
    score_files(folder / "preds.csv", folder / "truth.csv", "binary", folder / "out", settings=ScoringSettings(n_resamples=200))
    return folder / "out"


def test_html_report_has_every_section_and_embeds_every_plot(scored):
    page = (scored / "report.html").read_text()
    parts = outline(page)
    assert parts.headings == ["Scoring of preds.csv", "Inputs", "Results", "Comparisons", "Plots"]
    assert len(parts.images) == 2  # ROC and reliability
    for src in parts.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.removeprefix("data:image/png;base64,")).startswith(PNG_SIGNATURE)
    # Nothing is fetched when the page opens: every URL is an embedded data URI.
    assert all(url.startswith("data:") for url in parts.urls) and "<link" not in page and "<script" not in page
    assert "AUC-ROC" in page and "Expected calibration error" in page and "DeLong" in page
    assert (scored / "report.md").read_text().count("](plots/") == 2


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed (Debian package 'chromium')")
def test_html_report_renders_offline_in_headless_chromium(scored, tmp_path):
    # A copy of the page that, once loaded, writes into its DOM whether each image decoded; the
    # proxy points nowhere, so anything the page tried to fetch would fail to load.
    probe = "<script>window.onload = () => document.body.setAttribute('data-images', " \
            "[...document.images].map(i => i.complete && i.naturalWidth > 0).join(','));</script>"
    page = tmp_path / "probe.html"
    page.write_text((scored / "report.html").read_text().replace("</body>", probe + "</body>"))
    done = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--proxy-server=127.0.0.1:9",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=90, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert 'data-images="true,true"' in done.stdout


def test_the_run_report_becomes_self_contained_html(tmp_path):
    # A survival-followed binary table: ROC, precision-recall and two Kaplan-Meier plots, all linked from report.md.
    from wsi_pipeline.scoring.stage import score_predictions

    rng = np.random.default_rng(1)
    y = np.arange(40) % 2
    table = pd.concat([pd.DataFrame({"patient_id": [f"P{i:02d}" for i in range(40)], "model": m, "fold": np.arange(40) % 4,
                                     "label": y, "score": rng.random(40), "pfs_months": rng.exponential(12, 40),
                                     "event": rng.integers(0, 2, 40)}) for m in ("abmil", "meanpool")])
    score_predictions(table, tmp_path, n_resamples=100, context={"encoder": "demo-resnet18-random — DEMO encoder, not a pathology model"})
    markdown = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    parts = outline(page)
    linked = markdown.count("](plots/")
    assert linked == 5 and len(parts.images) == linked  # ROC, PR, reliability, two KM: every linked plot is embedded
    assert all(src.startswith("data:image/png;base64,") for src in parts.images)
    assert all(url.startswith("data:") for url in parts.urls)
    assert parts.headings[:3] == ["wsi-pipeline report", "Run", "Results"] and "Plots" in parts.headings
    assert 'class="banner"' in page and "DEMO encoder, not a pathology model" in page
    assert "<table>" in page and "<b>encoder</b>" in page
