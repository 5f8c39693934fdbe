"""Fixtures of the engine tests: one eight-patient cohort and its uninterrupted run.

The crash and concurrency tests (a killed run resumed, a worker killed mid-extraction, two runs
on one store) each compare what they wrote with a run that was never disturbed; they share that
run and its cohort instead of each making their own.
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from wsi_pipeline.sources.synthetic import generate_cohort

#: The undisturbed run's settings: the demo workflow, made small enough to run in seconds.
CLEAN_OVERRIDES = {"features": {"batch_size": 8}, "model": {"max_epochs": 3, "patience": 2},
                   "validation": {"n_folds": 2}, "scoring": {"bootstrap_resamples": 100}}


@pytest.fixture(scope="session")
def eight_patients(tmp_path_factory) -> Path:
    """Cohort table of 8 synthetic patients, one 1536² slide each, half of them positive."""
    return generate_cohort(tmp_path_factory.mktemp("eight-patients"), n_patients=8, seed=3, positive_fraction=0.5,
                           two_slide_fraction=0.0, width=1536, height=1536, n_levels=3)


@pytest.fixture(scope="session")
def clean_run(eight_patients, tmp_path_factory) -> Path:
    """The manifest of an uninterrupted run on :func:`eight_patients` (every stage, local cluster), after the run.

    Its output folder is the manifest's ``output`` (absolute); a test reruns the same settings
    elsewhere by loading the manifest and changing ``output``.
    """
    from wsi_pipeline.config import load_run_config
    from wsi_pipeline.engine.runner import EXIT_OK, run_pipeline

    folder = tmp_path_factory.mktemp("clean-run")
    manifest = folder / "clean.yaml"
    manifest.write_text(yaml.safe_dump({
        "workflow": "demo", "cohort": {"table": str(eight_patients)}, "output": str(folder / "clean"), "seed": 1,
        "cluster": {"n_workers": 2, "threads_per_worker": 1}, "overrides": CLEAN_OVERRIDES,
    }))
    result = run_pipeline(load_run_config(manifest), console=Console(file=StringIO()))
    assert result.exit_code == EXIT_OK, [f.reason for f in result.record.failures]
    return manifest
