"""The tile stage on a real Dask cluster: keys follow µm/px, QC files for every slide, clear failures."""

from __future__ import annotations

import json
import shutil
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from rich.console import Console

from wsi_pipeline.config import load_run_config
from wsi_pipeline.engine.runner import EXIT_ITEMS_FAILED, EXIT_OK, run_pipeline
from wsi_pipeline.sources.synthetic import generate_cohort

REPO = Path(__file__).resolve().parents[2]


def write_manifest(folder: Path, table: str) -> Path:
    manifest = {
        "workflow": str(REPO / "workflows" / "demo.yaml"),
        "cohort": {"table": table},
        "output": "out",
        "cluster": {"n_workers": 2, "threads_per_worker": 1},
        "seed": 1,
    }
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def run(manifest: Path, stages=("tile",)):
    text = StringIO()
    result = run_pipeline(load_run_config(manifest), stages=stages, console=Console(file=text, width=200))
    return result, text.getvalue()


@pytest.fixture()
def cohort(tmp_path):
    folder = tmp_path / "cohort"
    table = generate_cohort(folder, n_patients=4, seed=4, positive_fraction=0.5, two_slide_fraction=0.0, width=1024, height=1024, n_levels=3)
    return tmp_path, folder, table


def test_override_gives_new_entries_and_a_warning(cohort):
    tmp_path, _folder, table = cohort
    manifest = write_manifest(tmp_path, str(table))
    first, _ = run(manifest, stages=("tile", "extract"))
    assert first.exit_code == EXIT_OK
    rows = pd.read_csv(table, dtype={"patient_id": str})
    target = rows["slide_id"][0]
    before = {o.item: o.info["slide_uid"] for o in first.record.outcomes if o.stage == "tile"}

    rows["mpp"] = np.nan
    rows.loc[0, "mpp"] = 0.6  # the file says 0.5: 20% off
    rows.to_csv(table, index=False)
    second, console = run(manifest, stages=("tile", "extract"))
    outcomes = {(o.stage, o.item): o for o in second.record.outcomes}
    assert outcomes[("tile", target)].status == "done" and outcomes[("extract", target)].status == "done"
    assert outcomes[("tile", target)].info["slide_uid"] != before[target]
    assert outcomes[("tile", target)].info["slide_uid"].endswith("_0.6um")
    others = [s for s in rows["slide_id"] if s != target]
    assert all(outcomes[("tile", s)].status == "skipped" and outcomes[("extract", s)].status == "skipped" for s in others)
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    (warning,) = record["warnings"]
    assert "(0.6, from the cohort's 'mpp' column)" in warning and "metadata (0.5)" in warning and "20%" in warning
    assert target in warning and "warning" in console
    # Fewer level-0 px per tile at 0.6 µm/px: the entry's geometry follows the override.
    store_attrs = json.loads(
        next((tmp_path / "out" / "store" / "tiling").glob(f"*/{outcomes[('tile', target)].info['slide_uid']}/zarr.json")).read_text()
    )["attributes"]
    assert store_attrs["slide_mpp"] == 0.6 and store_attrs["mpp_source"] == "override"
    assert store_attrs["tile_size_level0"] == pytest.approx(128 * 1.0 / 0.6)


def test_every_slide_gets_qc_files_and_a_row_even_when_skipped(cohort):
    tmp_path, _folder, table = cohort
    manifest = write_manifest(tmp_path, str(table))
    _first, console = run(manifest)
    qc = tmp_path / "out" / "qc"
    slides = pd.read_csv(table)["slide_id"].tolist()
    assert sorted(p.stem for p in qc.glob("*.png")) == sorted(slides)
    assert "tiles kept per slide: min" in console
    shutil.rmtree(qc)
    second, _ = run(manifest)
    assert all(o.status == "skipped" for o in second.record.outcomes if o.stage == "tile")
    assert sorted(p.stem for p in qc.glob("*.png")) == sorted(slides)
    for slide in slides:
        geojson = json.loads((qc / f"{slide}.geojson").read_text())
        assert geojson["type"] == "FeatureCollection" and len(geojson["features"]) >= 1
    table_qc = pd.read_csv(qc / "tiling_qc.csv")
    assert sorted(table_qc["slide_id"]) == sorted(slides)
    assert (table_qc["n_kept"] > 0).all() and (table_qc["tissue_area_mm2"] > 0).all()
    assert (table_qc["status"] == "skipped").all()


def test_slide_without_mpp_fails_alone_naming_the_column(cohort):
    tmp_path, folder, table = cohort
    rows = pd.read_csv(table, dtype={"patient_id": str})
    tifffile.imwrite(folder / "plain.tiff", np.full((512, 512, 3), 200, np.uint8), tile=(256, 256), photometric="rgb")
    extra = pd.DataFrame([{"patient_id": "X", "slide_id": "plain", "slide_path": "plain.tiff", "label": 0}])
    pd.concat([rows, extra]).to_csv(table, index=False)
    result, _console = run(write_manifest(tmp_path, str(table)))
    assert result.exit_code == EXIT_ITEMS_FAILED
    (failure,) = result.record.failures
    assert failure.item == "plain" and "µm/px" in failure.reason and "'mpp' column" in failure.reason
    assert "plain.tiff" in failure.reason
    assert sum(o.status == "done" for o in result.record.outcomes if o.stage == "tile") == len(rows)
    qc = pd.read_csv(tmp_path / "out" / "qc" / "tiling_qc.csv")
    assert qc.set_index("slide_id").loc["plain", "flags"].startswith("failed")


def test_a_segmentation_model_named_in_the_manifest_runs_on_the_workers(cohort):
    import warnings

    torch = pytest.importorskip("torch")

    class PinkOrPurple(torch.nn.Module):
        """Tissue logit from colour: H&E has (R + B) / 2 well above G, glass does not."""

        def forward(self, x):
            return 40.0 * ((x[:, 0:1] + x[:, 2:3]) / 2 - x[:, 1:2] - 0.05)

    tmp_path, _folder, table = cohort
    (tmp_path / "models").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(PinkOrPurple()), str(tmp_path / "models" / "seg.pt"))
    manifest = write_manifest(tmp_path, str(table))
    data = yaml.safe_load(manifest.read_text())
    data["overrides"] = {"tiling": {"tissue": {"method": "model", "model": {"path": "models/seg.pt", "mpp": 16}}}}
    manifest.write_text(yaml.safe_dump(data))
    result, _ = run(manifest)
    assert result.exit_code == EXIT_OK
    qc = pd.read_csv(tmp_path / "out" / "qc" / "tiling_qc.csv")
    assert (qc["n_kept"] >= 5).all() and (qc["n_kept"] < qc["n_grid_tiles"]).all() and (qc["tissue_area_mm2"] > 0.02).all()
    entry = next((tmp_path / "out" / "store" / "tiling").glob("*/*/zarr.json"))
    attrs = json.loads(entry.read_text())["attributes"]
    assert attrs["mask_mpp"] == pytest.approx(16.0)  # the model's own scale, not the thumbnail's
    assert attrs["tiling_params"]["tissue"]["model"]["sha256"] and attrs["tiling_params"]["tissue"]["model"]["path"] is None


def test_one_slide_under_two_ids_is_computed_once_and_another_challenge_reuses_everything(cohort):
    """Real cohorts list one file under two ids; both tasks want one entry at the same time.

    Before entries had one writer, this crashed tiling about one run in three
    (``OSError: [Errno 39] Directory not empty``). The copy comes right after the original, so
    with two workers the two run together.
    """
    tmp_path, folder, table = cohort
    rows = pd.read_csv(table, dtype={"patient_id": str})
    original = rows.iloc[0]
    copy = folder / "copy-of-first.tiff"
    shutil.copyfile(folder / original["slide_path"], copy)
    duplicate = original.copy()
    duplicate["slide_id"], duplicate["slide_path"], duplicate["patient_id"] = "copy", copy.name, "copy-patient"
    rows = pd.concat([rows.iloc[:1], duplicate.to_frame().T, rows.iloc[1:]], ignore_index=True)
    rows.to_csv(table, index=False)
    result, _ = run(write_manifest(tmp_path, str(table)), stages=("tile", "extract"))
    assert result.exit_code == EXIT_OK and not result.record.failures
    for stage in ("tile", "extract"):
        pair = {o.item: o for o in result.record.outcomes if o.stage == stage and o.item in {original["slide_id"], "copy"}}
        assert pair[original["slide_id"]].info["slide_uid"] == pair["copy"].info["slide_uid"]
        assert sorted(o.status for o in pair.values()) == ["done", "skipped"], stage

    # Another challenge over the same slides, copied elsewhere under other ids, with another
    # workflow (same tiling and encoder) on this store: a feature is computed once, whichever
    # manifest asks, so nothing is recomputed and the store gains no entry.
    from wsi_pipeline.store.inventory import list_entries
    from wsi_pipeline.store.verify import verify_store

    store = tmp_path / "out" / "store"
    before = sorted((e.key, e.complete) for e in list_entries(str(store)))
    assert sum(key.startswith("features/") for key, _ in before) == 4  # five rows, four distinct slides
    other = tmp_path / "other-challenge"
    shutil.copytree(folder, other / "slides")
    rows["slide_id"] = "case-" + rows["slide_id"].astype(str)
    rows["patient_id"] = "p-" + rows["patient_id"].astype(str)
    rows["slide_path"] = [str(other / "slides" / p) for p in rows["slide_path"]]
    rows.to_csv(other / "cohort.csv", index=False)
    workflow = yaml.safe_load((REPO / "workflows" / "demo.yaml").read_text())
    workflow.update(name="other-challenge", task={**workflow["task"], "positive_name": "relapse", "negative_name": "no relapse"})
    workflow["model"]["aggregators"] = ["meanpool"]
    (other / "workflow.yaml").write_text(yaml.safe_dump(workflow))
    (other / "manifest.yaml").write_text(yaml.safe_dump({
        "workflow": str(other / "workflow.yaml"), "cohort": {"table": str(other / "cohort.csv")}, "output": "out",
        "store": str(store), "cluster": {"n_workers": 2, "threads_per_worker": 1}, "seed": 3,
    }))
    second, _ = run(other / "manifest.yaml", stages=("tile", "extract"))
    assert second.exit_code == EXIT_OK
    for stage in ("tile", "extract"):
        assert second.record.count(stage) == {"done": 0, "skipped": 5, "failed": 0, "blocked": 0}, stage
    assert sorted((e.key, e.complete) for e in list_entries(str(store))) == before
    assert not verify_store(str(store)).bad
