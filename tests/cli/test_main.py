"""The command line: exit statuses and messages a user sees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from wsi_pipeline.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def write(folder: Path, data: dict) -> Path:
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def base_manifest(**extra) -> dict:
    return {"workflow": str(REPO / "workflows" / "demo.yaml"), "cohort": {"synthetic": {"n_patients": 10}}, "output": "out", **extra}


def test_misspelt_key_exits_2_naming_it(tmp_path, capsys):
    manifest = write(tmp_path, base_manifest(clustr={"n_workers": 1}))
    assert main(["run", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "clustr" in err and "Did you mean 'cluster'" in err and str(manifest) in err
    assert "Traceback" not in err


def test_missing_file_exits_2_naming_it(tmp_path, capsys):
    manifest = write(tmp_path, base_manifest(cohort={"table": "no_such_cohort.csv"}))
    assert main(["run", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "no_such_cohort.csv" in err and "cohort.table" in err


def test_missing_manifest_exits_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml" in capsys.readouterr().err


def test_console_script_prints_no_traceback(tmp_path):
    manifest = write(tmp_path, base_manifest(seeed=1))
    done = subprocess.run(
        [sys.executable, "-m", "wsi_pipeline.cli.main", "run", str(manifest)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "seeed" in done.stderr and "Traceback" not in done.stderr


def test_dry_run_prints_the_plan_and_computes_nothing(tmp_path, capsys):
    manifest = write(tmp_path, base_manifest(cohort={"synthetic": {"n_patients": 20}}))
    assert main(["run", str(manifest), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "20 (6 responder, 14 non-responder)" in out
    assert "tile → extract → train → score" in out and "DEMO" in out and "predictions.csv" in out
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_unreadable_slides(tmp_path, capsys, shared_slides):
    table = tmp_path / "cohort.csv"
    table.write_text(
        "patient_id,slide_path,label\n"
        f"A,{shared_slides / 'CMU-1-Small-Region.svs'},1\n"
        f"B,{shared_slides / 'broken.svs'},0\n"
        "C,nowhere.svs,0\n"
    )
    manifest = write(tmp_path, base_manifest(cohort={"table": str(table)}, overrides={"validation": {"n_folds": 2}}))
    assert main(["tile", str(manifest), "--dry-run"]) == 2
    out = capsys.readouterr().out
    assert "broken.svs" in out and "nowhere.svs" in out
    assert "CMU-1-Small-Region" not in out.split("problem(s)")[1]
