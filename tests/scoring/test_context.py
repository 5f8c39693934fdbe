"""The report's run context (title, caption, facts), worded from the run configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wsi_pipeline.config import load_run_config
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.scoring.context import encoder_label, report_context

REPO = Path(__file__).resolve().parents[2]


def config_with(tmp_path: Path, **overrides):
    manifest = {
        "workflow": "demo",
        "cohort": {"synthetic": {"n_patients": 10}},
        "output": "out",
        "seed": 11,
        "overrides": overrides,
    }
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return load_run_config(path)


def test_demo_run_context_flags_the_demo_encoder(tmp_path):
    config = config_with(tmp_path, validation={"n_folds": 3, "val_fraction": 0.25})
    context = report_context(config)
    label = "demo-resnet18-random — DEMO encoder, not a pathology model"
    assert context.title == "wsi-pipeline: demo"
    assert context.caption == f"demo; encoder {label}"
    assert context.facts == {
        "workflow": "demo",
        "manifest": str(tmp_path / "manifest.yaml"),
        "encoder": label,
        "tiling": f"{config.workflow.tiling.mpp:g} µm/px, {config.workflow.tiling.tile_px} px tiles",
        "validation": "3-fold patient-level CV, inner validation 25% for early stopping",
        "bags": "patient, early fusion (a patient's slides form one bag)",
        "instance features": "standardised per feature with each fold's fit patients' mean and std",
        "seed": 11,
    }
    assert list(context.facts) == ["workflow", "manifest", "encoder", "tiling", "validation", "bags", "instance features", "seed"]
    unstandardised = report_context(config_with(tmp_path, model={"standardise": False}))
    assert unstandardised.facts["instance features"] == "as stored (not standardised)"
    assert "tile filter" not in context.facts
    filtered = report_context(config_with(tmp_path, model={"min_tissue": 0.5, "max_pen": 0.05}))
    assert filtered.facts["tile filter"] == "tissue_fraction >= 0.5, pen_fraction <= 0.05"


def test_a_pathology_encoder_is_named_plainly():
    assert encoder_label("uni") == "uni"


def test_slide_level_bags_are_accepted_and_stated(tmp_path):
    config = config_with(tmp_path, model={"bags": "slide"})
    assert config.workflow.model.bags == "slide"
    assert report_context(config).facts["bags"].startswith("slide-level (each slide a bag with its patient's target")
    late = report_context(config_with(tmp_path, model={"bags": "patient-late"})).facts["bags"]
    assert late.startswith("patient, late fusion")
    with pytest.raises(WSIPipelineError, match="slides"):
        config_with(tmp_path, model={"bags": "slides"})
