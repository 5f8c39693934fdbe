"""The command line: exit statuses and messages a user sees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
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
        [sys.executable, "-m", "wsi_pipeline.cli.main", "run", str(manifest)], capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "seeed" in done.stderr and "Traceback" not in done.stderr


def test_dry_run_prints_the_plan_and_computes_nothing(tmp_path, capsys):
    manifest = write(tmp_path, base_manifest(cohort={"synthetic": {"n_patients": 20}}))
    assert main(["run", str(manifest), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "20 (6 responder, 14 non-responder)" in out
    assert "tile → extract → train → score" in out and "DEMO" in out and "predictions.csv" in out
    assert "pr.png" in out  # a binary task's figures: ROC and precision-recall
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("manifest", sorted(p.name for p in (REPO / "data_manifests").glob("*.yaml")))
def test_every_shipped_manifest_checks_out(manifest, tmp_path, capsys):
    """The README points at these files "as they are": each must pass its own dry run (the cluster
    examples' synthetic cohorts once had too few positives for the demo's 5 folds)."""
    assert main(["run", str(REPO / "data_manifests" / manifest), "--dry-run", "--output", str(tmp_path / "out")]) == 0, \
        capsys.readouterr().err
    assert "dry run: everything checks out" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_dry_run_names_the_submission_file(tmp_path, capsys):
    submission = {"model": "abmil", "file": "entry.csv", "columns": {"score": "probability"}}
    manifest = write(tmp_path, base_manifest(overrides={"scoring": {"submission": submission}}))
    assert main(["score", str(manifest), "--dry-run"]) == 0
    words = " ".join(capsys.readouterr().out.replace("│", " ").split())  # the table may wrap the outputs cell
    assert "entry.csv (abmil's predictions)" in words


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


# -- commands without a manifest -----------------------------------------------------------------
def test_slide_info_prints_json(shared_slides, capsys):
    import json

    assert main(["slide", "info", str(shared_slides / "CMU-1-Small-Region.svs")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vendor"] == "aperio" and info["dimensions"] == [2220, 2967] and info["level_count"] == 1
    assert info["level_dimensions"] == [[2220, 2967]] and info["level_downsamples"] == [1.0]
    assert info["mpp"] == 0.499 and info["objective_power"] == 20.0


def test_slide_info_of_a_dicom_series_and_of_a_slide_without_mpp(shared_slides, tmp_path, capsys):
    import json

    import numpy as np
    import tifffile

    assert main(["slide", "info", str(shared_slides / "dicom-boxes")]) == 0
    dicom = json.loads(capsys.readouterr().out)
    assert dicom["vendor"] == "dicom" and dicom["dimensions"] == [16, 16] and dicom["mpp"] == 0.499
    path = tmp_path / "plain.tiff"
    tifffile.imwrite(path, np.full((300, 200, 3), 220, np.uint8), tile=(128, 128), photometric="rgb")
    assert main(["slide", "info", str(path)]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["mpp"] is None and plain["objective_power"] is None and plain["dimensions"] == [200, 300]
    assert plain["vendor"] == "generic-tiff"


def test_slide_info_of_an_unreadable_file_exits_2(shared_slides, capsys):
    assert main(["slide", "info", str(shared_slides / "broken.svs")]) == 2
    err = capsys.readouterr().err
    assert "broken.svs" in err and "OpenSlide cannot read" in err and "Traceback" not in err


def test_tiles_export_writes_tissue_tiles_and_a_contact_sheet(shared_slides, tmp_path):
    import numpy as np
    from PIL import Image

    out = tmp_path / "tiles"
    assert main(["tiles", "export", str(shared_slides / "CMU-1-Small-Region.svs"), "--n", "6", "--output", str(out), "--tile-px", "128"]) == 0
    tiles = sorted(out.glob("tile_*.png"))
    assert len(tiles) == 6
    for path in tiles:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert pixels.shape == (128, 128, 3)
        assert ((pixels.max(axis=2).astype(int) - pixels.min(axis=2)) > 25).mean() > 0.1  # tissue, not glass
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size[0] == 6 * 128 and sheet.size[1] > 128


def test_tiles_export_without_mpp_names_the_option(tmp_path, capsys):
    import numpy as np
    import tifffile

    path = tmp_path / "no_mpp.tiff"
    tifffile.imwrite(path, np.full((512, 512, 3), 200, np.uint8), tile=(256, 256), photometric="rgb")
    assert main(["tiles", "export", str(path), "--n", "4", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "µm/px" in err and "--slide-mpp" in err and str(path) in err and "Traceback" not in err
