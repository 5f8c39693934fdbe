"""The report's Protocol section, worded from the run configuration."""

from __future__ import annotations

from pathlib import Path

import yaml

from wsi_pipeline.config import load_run_config
from wsi_pipeline.scoring.context import report_context
from wsi_pipeline.scoring.protocol import protocol_facts


def config_with(tmp_path: Path, **overrides):
    manifest = {"workflow": "demo", "cohort": {"synthetic": {"n_patients": 10}}, "output": "out", "seed": 11, "overrides": overrides}
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return load_run_config(path)


def test_protocol_states_folds_repeats_selection_bags_standardisation_schedule_and_sampling(tmp_path):
    config = config_with(
        tmp_path,
        validation={"n_folds": 3, "n_repeats": 2, "val_fraction": 0.25, "inner_folds": 2},
        model={"bags": "patient-late", "standardise": False, "lr": 3e-4, "lr_schedule": "cosine", "warmup_epochs": 2,
               "max_epochs": 7, "patience": 3, "sampling": "balanced", "grid": {"lr": [1e-4, 3e-4]}},
        task={"balanced": False},  # balanced sampling replaces the loss weights
    )
    facts = protocol_facts(config)
    assert list(facts) == ["folds", "repeats", "selection split", "model selection", "bags", "standardisation", "optimiser",
                           "sampling"]
    assert facts["folds"].startswith("3-fold cross-validation by patient")
    assert facts["repeats"].startswith("2 (")
    assert facts["selection split"].startswith("25% of each fold's training patients") and "patience 3" in facts["selection split"]
    assert "nested CV over 2 combinations" in facts["model selection"] and "2 inner folds" in facts["model selection"]
    assert facts["bags"].startswith("patient, late fusion")
    assert facts["standardisation"] == "none (features as stored)"
    assert facts["optimiser"].startswith("AdamW, lr 0.0003") and "cosine decay to 0 at epoch 7 after 2 warm-up epoch(s)" in facts["optimiser"]
    assert facts["sampling"] == "bags drawn with replacement, each class equally often"
    assert report_context(config).protocol == facts


def test_protocol_without_grid_or_repeats(tmp_path):
    facts = protocol_facts(config_with(tmp_path, model={"lr_schedule": "constant", "sampling": "shuffle"}))
    assert facts["model selection"] == "none: every fold trains the configured settings"
    assert facts["repeats"] == "1 (a single cross-validation)"
    assert facts["optimiser"].endswith(", constant")
    assert facts["standardisation"].startswith("instance features standardised")
