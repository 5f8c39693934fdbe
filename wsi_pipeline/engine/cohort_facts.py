"""What the report says about a run's cohort: the slides given, what failed or was excluded, whether it was generated.

The score stage gets these facts as plain data (:class:`~wsi_pipeline.scoring.cohort_summary.CohortSummary`);
they come from the cohort table and the run record, which only the engine holds. A run that did not
tile or embed (``wsi-pipeline score MANIFEST``, or ``train``) has no slide failures of its own: the
previous run's ``run.json``, still in place while the stages run, gives them, so scoring alone
reports the cohort as the full run did (and finds its report up to date).
"""

from __future__ import annotations

import json
from itertools import islice

from wsi_pipeline.cohort.table import Cohort
from wsi_pipeline.config.loader import RunConfig
from wsi_pipeline.engine.record import RunRecord
from wsi_pipeline.scoring.cohort_summary import CohortSummary

#: The stages whose items are slides.
SLIDE_STAGES = frozenset({"generate", "tile", "extract"})

#: Slides read for the synthetic generator's mark: a generated table is generated throughout,
#: and a few header reads stay cheap on a network file system with thousands of slides.
MARK_CHECKS = 3


def cohort_summary(config: RunConfig, cohort: Cohort, record: RunRecord) -> CohortSummary:
    """The run's cohort facts for the report.

    Parameters
    ----------
    config
        The run's configuration (a manifest ``cohort.synthetic`` makes the cohort synthetic).
    cohort
        The loaded cohort (its slide table).
    record
        The run record: its failed items and excluded patients.

    Returns
    -------
    CohortSummary
        Slides given, excluded patients, failed slides, and whether the cohort was generated.
    """
    failures = [(o.stage, o.item, o.reason) for o in record.failures]
    excluded = dict(record.excluded_patients)
    if not any(o.stage in SLIDE_STAGES for o in record.outcomes):
        earlier_failures, earlier_excluded = _earlier_record(config)
        failures = earlier_failures + failures
        excluded = {**earlier_excluded, **excluded}
    synthetic = config.manifest.cohort.synthetic is not None or _generated(cohort)
    return CohortSummary.from_run(cohort.slides, excluded, failures, synthetic=synthetic)


def _earlier_record(config: RunConfig) -> tuple[list[tuple[str, str, str | None]], dict[str, str]]:
    """The slide failures and excluded patients of the run.json the previous run left (none without one)."""
    try:
        data = json.loads((config.output_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [], {}
    failed = [(f.get("stage"), f.get("item"), f.get("reason")) for f in data.get("failed", []) if f.get("stage") in SLIDE_STAGES]
    return failed, dict(data.get("excluded_patients") or {})


def _generated(cohort: Cohort) -> bool:
    """Whether the cohort's first readable slides carry the synthetic generator's TIFF Software tag."""
    if "path" not in cohort.slides:
        return False  # a cohort that brings its features has no slide files to look at
    from pathlib import Path

    import tifffile

    from wsi_pipeline.sources.synthetic.tiff import SOFTWARE

    existing = (Path(str(p)) for p in cohort.slides["path"] if isinstance(p, (str, Path)) and Path(str(p)).is_file())
    for path in islice(existing, MARK_CHECKS):
        try:
            with tifffile.TiffFile(path) as tif:
                tag = tif.pages[0].tags.get("Software")
        except Exception:  # noqa: BLE001 - not a TIFF, or unreadable: not a generated slide; the stages say why
            tag = None
        if tag is not None and str(tag.value).startswith(SOFTWARE):
            return True
    return False
