"""The cohort facts the engine hands the report: failures and exclusions from this run or the previous run's record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import yaml

from wsi_pipeline.cohort.table import Cohort
from wsi_pipeline.config import load_run_config
from wsi_pipeline.engine.cohort_facts import cohort_summary
from wsi_pipeline.engine.outcome import ItemOutcome
from wsi_pipeline.engine.record import RunRecord
from wsi_pipeline.scoring.cohort_summary import FailedItem
from wsi_pipeline.sources.synthetic.tiff import SOFTWARE


def config_with(tmp_path: Path, cohort: dict):
    manifest = {"workflow": "demo", "cohort": cohort, "output": "out", "seed": 1}
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return load_run_config(path)


def a_cohort(tmp_path: Path) -> Cohort:
    slides = pd.DataFrame({"slide_id": ["a", "b", "c"], "patient_id": ["P1", "P1", "P2"],
                           "path": [str(tmp_path / f"{s}.svs") for s in "abc"], "mpp": float("nan")})
    return Cohort(slides=slides, patients=pd.DataFrame({"patient_id": ["P1", "P2"]}), source=tmp_path / "cohort.csv")


def test_this_runs_failures_and_exclusions_are_the_summary(tmp_path):
    config = config_with(tmp_path, {"synthetic": {"n_patients": 10}})
    record = RunRecord(config={}, seed=1)
    record.add([ItemOutcome("tile", "c", "failed", reason="OpenSlide cannot read c.svs"), ItemOutcome("tile", "a", "done"),
                ItemOutcome("train", "0-abmil", "failed", reason="not a slide")])
    record.excluded_patients["P2"] = "no slide with features (failed or missing: c)"
    summary = cohort_summary(config, a_cohort(tmp_path), record)
    assert summary.slides == (("a", "P1"), ("b", "P1"), ("c", "P2"))
    assert summary.failed == (FailedItem("c", "P2", "tile", "OpenSlide cannot read c.svs"),)
    assert summary.excluded == {"P2": "no slide with features (failed or missing: c)"}
    assert summary.synthetic  # the manifest's cohort.synthetic


def test_a_score_only_run_takes_the_slide_failures_from_the_previous_run_json(tmp_path):
    (tmp_path / "cohort.csv").write_text("patient_id,slide_id,slide_path,label\n")
    config = config_with(tmp_path, {"table": "cohort.csv"})
    config.output_dir.mkdir(parents=True)
    earlier = {"failed": [{"stage": "extract", "item": "b", "reason": "CUDA out of memory"},
                          {"stage": "train", "item": "0-abmil", "reason": "not a slide"}],
               "excluded_patients": {"P2": "no target"}}
    (config.output_dir / "run.json").write_text(json.dumps(earlier))
    record = RunRecord(config={}, seed=1)
    record.add([ItemOutcome("score", "report", "done")])
    summary = cohort_summary(config, a_cohort(tmp_path), record)
    assert summary.failed == (FailedItem("b", "P1", "extract", "CUDA out of memory"),)
    assert summary.excluded == {"P2": "no target"}
    assert not summary.synthetic  # a table whose slide files do not exist: nothing marks it generated
    # A run that tiled this time has its own record: the earlier one is not read.
    record.add([ItemOutcome("tile", "a", "done")])
    assert cohort_summary(config, a_cohort(tmp_path), record).failed == ()


def test_a_table_of_generated_slides_is_synthetic(tmp_path):
    (tmp_path / "cohort.csv").write_text("patient_id,slide_id,slide_path,label\n")
    config = config_with(tmp_path, {"table": "cohort.csv"})
    record = RunRecord(config={}, seed=1)
    (tmp_path / "a.svs").write_bytes(b"not a tiff")  # unreadable: skipped, the next slide decides
    tifffile.imwrite(tmp_path / "b.svs", np.zeros((16, 16, 3), np.uint8), software="other scanner")
    assert not cohort_summary(config, a_cohort(tmp_path), record).synthetic
    tifffile.imwrite(tmp_path / "c.svs", np.zeros((16, 16, 3), np.uint8), software=SOFTWARE)
    assert cohort_summary(config, a_cohort(tmp_path), record).synthetic
