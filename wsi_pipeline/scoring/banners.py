"""The warnings a report opens with: a synthetic cohort, a demo encoder.

Numbers from a generated cohort or a randomly initialised encoder test the pipeline; they say
nothing about a task. Tables and plots get copied into slides and chats without the run's
facts, so the report's first lines say it, in ``> **...**`` lines that report.html shows as
banners (:mod:`~wsi_pipeline.scoring.markdown_html`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SYNTHETIC_BANNER = ("SYNTHETIC cohort: generated slides and outcomes. These numbers test the pipeline and say nothing "
                    "about any real patients.")
DEMO_BANNER = "DEMO encoder, not a pathology model: these numbers test the pipeline and say nothing about the task."


def names_demo_encoder(facts: Mapping[str, Any] | None) -> bool:
    """Whether a run's facts name a demo encoder (its label says ``DEMO``; see ``context.encoder_label``)."""
    return any("DEMO" in str(value) for value in (facts or {}).values())


def banner_lines(*, synthetic: bool, demo: bool) -> list[str]:
    """The Markdown banner lines a report opens with (none for a real cohort and encoder).

    Parameters
    ----------
    synthetic
        The cohort was generated.
    demo
        The encoder is a demo.

    Returns
    -------
    list of str
        ``> **...**`` lines, each followed by a blank line.
    """
    lines = []
    for shown, text in ((synthetic, SYNTHETIC_BANNER), (demo, DEMO_BANNER)):
        if shown:
            lines += [f"> **{text}**", ""]
    return lines
