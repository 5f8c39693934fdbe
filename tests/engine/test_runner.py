"""End to end on a real Dask cluster: outputs contract, resume, and bad slides failing alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from rich.console import Console

from wsi_pipeline.config import load_run_config
from wsi_pipeline.engine.runner import EXIT_ITEMS_FAILED, EXIT_OK, run_pipeline
from wsi_pipeline.sources.synthetic import generate_cohort

REPO = Path(__file__).resolve().parents[2]

#: Small but honest: real slides, real cluster, every stage; sized to run in well under a minute.
FAST_OVERRIDES = {
    "model": {"max_epochs": 8, "patience": 3},
    "validation": {"n_folds": 3},
    "scoring": {"bootstrap_resamples": 200},
}


def write_manifest(folder: Path, cohort: dict, **extra) -> Path:
    manifest = {
        "workflow": str(REPO / "workflows" / "demo.yaml"),
        "cohort": cohort,
        "output": "out",
        "cluster": {"n_workers": 2, "threads_per_worker": 1},
        "seed": 3,
        "overrides": FAST_OVERRIDES,
        **extra,
    }
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def quiet() -> Console:
    return Console(file=open("/dev/null", "w"), width=120)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    manifest = write_manifest(
        folder, {"synthetic": {"n_patients": 12, "positive_fraction": 0.5, "width": 1536, "height": 1536, "n_levels": 3}}
    )
    config = load_run_config(manifest)
    result = run_pipeline(config, console=quiet())
    return config, result


def test_run_writes_the_output_contract(synthetic_run):
    config, result = synthetic_run
    out = config.output_dir
    assert result.exit_code == EXIT_OK
    predictions = pd.read_csv(out / "predictions.csv", dtype={"patient_id": str})
    assert set(predictions.columns) >= {"patient_id", "model", "fold", "label", "score"}
    assert len(predictions) == 12 * 2 and set(predictions["model"]) == {"abmil", "meanpool"}
    assert not predictions.duplicated(["patient_id", "model"]).any()
    assert predictions["score"].between(0, 1).all()
    assert predictions["encoder"].str.startswith("demo-resnet18-random-").all()
    metrics = json.loads((out / "metrics.json").read_text())
    for model in ("abmil", "meanpool"):
        auc = metrics[model]["auc"]
        assert set(auc) == {"value", "ci_low", "ci_high"} and auc["ci_low"] <= auc["value"] <= auc["ci_high"]
        assert "accuracy" in metrics[model]
    record = json.loads((out / "run.json").read_text())
    assert record["seed"] == 3 and record["versions"]["torch"]
    assert record["config"]["workflow"]["name"] == "demo"
    assert {"tile", "extract", "train", "score"} <= set(record["timings_seconds"])
    assert record["wall_seconds"] >= record["timings_seconds"]["extract"] > 0
    assert record["cluster"].startswith("local cluster: 2 CPU workers x 1 thread")
    assert record["failed"] == [] and record["blocked"] == []
    logs = sorted(p.name for p in (out / "logs").glob("*.log"))
    assert logs[0].startswith("scheduler") and sum(name.startswith("worker-cpu-") for name in logs) == 2
    import torch

    trained = [item for item in record["items"] if item["stage"] == "train"]
    assert len(trained) == 3 * 2 and {item["info"]["device"] for item in trained} == {"cuda" if torch.cuda.is_available() else "cpu"}
    assert (out / "plots" / "roc.png").stat().st_size > 1000
    assert (out / "report.md").read_text().count("demo-resnet18-random") >= 1
    assert "DEMO" in (out / "report.md").read_text()
    assert len(list((out / "qc").glob("*.png"))) == record["counts"]["tile"]["done"]
    folds = pd.read_csv(out / "folds.csv", dtype={"patient_id": str})
    test_rows = folds[folds["role"] == "test"]
    assert sorted(test_rows["patient_id"]) == sorted(predictions["patient_id"].unique())
    # Each fold's kept model also predicted its inner validation patients (what a tuned threshold is chosen on).
    validation = pd.read_csv(out / "validation_predictions.csv", dtype={"patient_id": str})
    for (fold, model), rows in validation.groupby(["fold", "model"]):
        assert sorted(rows["patient_id"]) == sorted(folds.loc[(folds["fold"] == fold) & (folds["role"] == "val"), "patient_id"])
    assert set(validation["model"]) == {"abmil", "meanpool"} and validation["score"].between(0, 1).all()


def test_second_run_recomputes_nothing(synthetic_run):
    config, _ = synthetic_run
    before = {p: p.stat().st_mtime_ns for p in (config.output_dir / "predictions.csv", config.output_dir / "metrics.json")}
    again = run_pipeline(config, console=quiet())
    counts = {stage: again.record.count(stage) for stage in ("generate", "tile", "extract", "train", "score")}
    assert all(c["done"] == 0 and c["failed"] == 0 and c["skipped"] > 0 for c in counts.values()), counts
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_unreadable_slides_fail_alone(tmp_path, shared_slides):
    cohort_dir = tmp_path / "cohort"
    table = generate_cohort(cohort_dir, n_patients=8, seed=1, positive_fraction=0.5, two_slide_fraction=0.0, width=1024, height=1024, n_levels=3)
    rows = pd.read_csv(table, dtype={"patient_id": str})
    for name in ("broken.svs", "unopenable.tiff"):
        shutil.copy(shared_slides / name, cohort_dir / name)
    bad = pd.DataFrame(
        [
            {"patient_id": "BAD1", "slide_id": "broken", "slide_path": "broken.svs", "label": 1},
            {"patient_id": "BAD2", "slide_id": "unopenable", "slide_path": "unopenable.tiff", "label": 0},
            {"patient_id": rows["patient_id"][0], "slide_id": "missing", "slide_path": "missing.tiff", "label": rows["label"][0]},
        ]
    )
    pd.concat([rows, bad]).to_csv(cohort_dir / "with_bad.csv", index=False)
    manifest = write_manifest(tmp_path, {"table": "cohort/with_bad.csv"}, overrides={**FAST_OVERRIDES, "validation": {"n_folds": 2}})
    config = load_run_config(manifest)
    result = run_pipeline(config, console=quiet())
    assert result.exit_code == EXIT_ITEMS_FAILED
    record = json.loads((config.output_dir / "run.json").read_text())
    failed = {item["item"]: item["reason"] for item in record["failed"]}
    assert set(failed) == {"broken", "unopenable", "missing"}
    assert "broken.svs" in failed["broken"] and "OpenSlide cannot read" in failed["broken"]
    assert "Unsupported TIFF compression" in failed["unopenable"]
    assert "not found" in failed["missing"]
    assert set(record["excluded_patients"]) == {"BAD1", "BAD2"}
    predictions = pd.read_csv(config.output_dir / "predictions.csv", dtype={"patient_id": str})
    assert set(predictions["patient_id"]) == set(rows["patient_id"])  # the rest of the run finished
    assert (config.output_dir / "metrics.json").is_file()
    # The report says what the cohort gave and why it scored fewer: 10 patients given are not reported as 8 without a word.
    report = (config.output_dir / "report.md").read_text()
    assert "- **given**: 10 patients, 11 slides" in report and "- **scored**: 8 patients, 8 slides" in report
    assert "- **excluded or failed**: 2 patients, 3 slides" in report
    assert "| BAD1 | no slide with features (failed or missing: broken)" in report and "OpenSlide cannot read" in report
    assert report.splitlines()[2].startswith("> **SYNTHETIC cohort")  # a table of generated slides is flagged


def test_feature_entries_carry_their_provenance(synthetic_run):
    config, _ = synthetic_run
    import zarr

    root = zarr.open_group(str(config.store_path), mode="r")
    (encoder_id,) = list(root["features"].group_keys())
    (tiling_id,) = list(root[f"features/{encoder_id}"].group_keys())
    uids = list(root[f"features/{encoder_id}/{tiling_id}"].group_keys())
    assert len(uids) == len(pd.read_csv(config.output_dir / "cohort" / "cohort.csv"))
    attrs = dict(root[f"features/{encoder_id}/{tiling_id}/{uids[0]}"].attrs)
    assert attrs["complete"] is True and attrs["encoder"] == "demo-resnet18-random" and attrs["encoder_is_demo"] is True
    assert attrs["tile_px"] == 128 and attrs["tile_um"] == 128.0 and attrs["slide_mpp"] == pytest.approx(0.5)
    assert attrs["read_level"] == 1 and len(attrs["level0_size"]) == 2 and len(attrs["weights_sha256"]) == 64
    assert root[f"features/{encoder_id}/{tiling_id}/{uids[0]}/features"].dtype == "float16"


def test_every_aggregator_trains_and_is_scored_beside_meanpool(synthetic_run, tmp_path):
    """The demo recipe with every registered aggregator, on the first run's features (tiling and extraction reused)."""
    from wsi_pipeline.mil.registry import available_aggregators

    config, _ = synthetic_run
    aggregators = list(available_aggregators())
    manifest = write_manifest(
        tmp_path,
        {"table": str(config.output_dir / "cohort" / "cohort.csv")},
        store=str(config.store_path),
        overrides={**FAST_OVERRIDES, "validation": {"n_folds": 2}, "model": {"max_epochs": 1, "patience": 1, "aggregators": aggregators}},
    )
    result = run_pipeline(load_run_config(manifest), console=quiet())
    assert result.exit_code == EXIT_OK
    assert result.record.count("extract")["done"] == 0 and result.record.count("train")["done"] == 2 * len(aggregators)
    out = tmp_path / "out"
    predictions = pd.read_csv(out / "predictions.csv", dtype={"patient_id": str})
    assert sorted(set(predictions["model"])) == sorted(aggregators) and len(predictions) == 12 * len(aggregators)
    assert predictions["score"].between(0, 1).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"meanpool", "abmil", "transmil", "clam-mb"} <= set(metrics) and all(metrics[m]["auc"]["value"] is not None for m in aggregators)
    report = (out / "report.md").read_text()
    assert all(f"| {name} " in report or f"| `{name}` " in report for name in aggregators), report[:2000]
    assert len(pd.read_csv(out / "training.csv")) == 2 * len(aggregators)


def test_a_stage_runs_alone_on_what_is_there(synthetic_run):
    config, _ = synthetic_run
    result = run_pipeline(config, stages=("score",), console=quiet())
    assert result.exit_code == EXIT_OK
    assert [o.status for o in result.record.outcomes if o.stage == "score"] == ["skipped"]
    assert not any(o.stage in {"tile", "extract", "train"} for o in result.record.outcomes)


def test_existing_scheduler_is_used(synthetic_run, tmp_path):
    from distributed import Client, LocalCluster

    config, _ = synthetic_run
    # The first run's cohort and store: the tile tasks find their entries and skip, so the test
    # costs a cluster's start, not a cohort's generation. A worker process, as an existing
    # cluster has: in this process's threads, generating a cohort once hung in numpy 2.4.6's
    # np.unique (called by np.quantile) waiting for the GIL (CI at 85be3c9; py-spy showed no
    # thread holding it).
    manifest = write_manifest(tmp_path, {"table": str(config.output_dir / "cohort" / "cohort.csv")}, store=str(config.store_path))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        other = load_run_config(manifest, scheduler=cluster.scheduler_address)
        result = run_pipeline(other, stages=("tile",), console=quiet())
        assert result.exit_code == EXIT_OK
        assert result.record.config["scheduler_address"] == cluster.scheduler_address
        assert result.record.count("tile")["skipped"] == len(pd.read_csv(config.output_dir / "cohort" / "cohort.csv"))
        prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert "tile" in prefixes


@pytest.mark.timeout(240)  # were extraction to wait for a GPU slot no worker has, it would hang: fail instead
def test_an_external_scheduler_without_gpu_slots_still_extracts_with_a_warning(synthetic_run):
    from distributed import LocalCluster

    config, _ = synthetic_run
    # A worker process, as in the test above (and as cheap: workers fork from the suite's fork server).
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        other = load_run_config(config.manifest_path, scheduler=cluster.scheduler_address)
        result = run_pipeline(other, stages=("extract",), console=quiet())
        address = cluster.scheduler_address
    assert result.exit_code == EXIT_OK
    assert result.record.count("extract")["skipped"] == len(pd.read_csv(config.output_dir / "cohort" / "cohort.csv"))
    (warning,) = result.record.run_warnings
    assert "no worker of the scheduler advertises the 'GPU' resource" in warning and "--resources GPU=1" in warning
    record = json.loads((config.output_dir / "run.json").read_text())
    assert warning in record["warnings"]
    assert record["cluster"] == f"scheduler {address}: 1 worker, 1 thread, none advertises GPU"


def test_too_few_patients_left_fails_the_training_item_not_the_run(tmp_path):
    table = generate_cohort(tmp_path / "cohort", n_patients=4, seed=2, positive_fraction=0.5, two_slide_fraction=0.0,
                            width=1024, height=1024, n_levels=3)
    manifest = write_manifest(tmp_path, {"table": str(table)})
    config = load_run_config(manifest)
    result = run_pipeline(config, console=quiet())
    assert result.exit_code == EXIT_ITEMS_FAILED
    record = json.loads((config.output_dir / "run.json").read_text())
    assert record["counts"]["extract"]["done"] == 4
    (failure,) = [f for f in record["failed"] if f["stage"] == "train"]
    assert "cannot cross-validate the 4 patient(s)" in failure["reason"] and "n_folds" in failure["reason"]
    assert any(f["stage"] == "score" and "no predictions" in f["reason"] for f in record["failed"])


def test_earlier_run_records_are_kept(synthetic_run):
    config, _ = synthetic_run
    history = config.output_dir / ".history"
    before = len(list(history.glob("run-*.json"))) if history.is_dir() else 0
    run_pipeline(config, stages=("score",), console=quiet())
    archived = sorted(history.glob("run-*.json"))
    assert len(archived) == before + 1
    assert json.loads(archived[-1].read_text())["status"] in {"ok", "failed items"}


def test_store_tools_on_a_store_the_pipeline_wrote(synthetic_run, tmp_path, capsys):
    """`store ls` lists a run's store and `store verify` passes it; a removed feature chunk fails
    it naming the entry; export-h5 then import-h5 into a fresh store gives the same features."""
    from wsi_pipeline.cli.main import main
    from wsi_pipeline.store import FeatureStore

    config, _ = synthetic_run
    store = tmp_path / "store"
    shutil.copytree(config.store_path, store)
    assert main(["store", "ls", str(store), "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    features = [e for e in entries if e["kind"] == "features"]
    slides = {o.info["slide_uid"] for o in synthetic_run[1].record.outcomes if o.stage == "tile"}
    assert {e["key"].rsplit("/", 1)[1] for e in features} == slides and len(slides) >= 12
    assert len([e for e in entries if e["kind"] == "tiling"]) == len(slides) and all(e["complete"] for e in entries)
    assert main(["store", "verify", str(store)]) == 0
    capsys.readouterr()

    exported = tmp_path / "h5"
    assert main(["store", "export-h5", str(store), "--output", str(exported)]) == 0
    fresh = tmp_path / "fresh"
    assert main(["store", "import-h5", str(exported), "--store", str(fresh)]) == 0
    capsys.readouterr()
    original, imported = FeatureStore(store), FeatureStore(fresh)
    for entry in features:
        slide = entry["key"].rsplit("/", 1)[1]
        a = original.read_features(entry["encoder_id"], entry["tiling_id"], slide)
        b = imported.read_features(entry["encoder_id"], entry["tiling_id"], slide)
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_array_equal(original.read_tiling(entry["tiling_id"], slide).coords,
                                      imported.read_tiling(entry["tiling_id"], slide).coords)

    victim = features[0]["key"]
    chunk = next(p for p in (store / victim / "features" / "c").rglob("*") if p.is_file())
    chunk.unlink()
    assert main(["store", "verify", str(store)]) == 1
    assert victim in capsys.readouterr().out


def test_gathered_bags_warn_of_one_image_for_two_patients_and_carry_checksums(synthetic_run, tmp_path):
    from wsi_pipeline.cohort import load_cohort
    from wsi_pipeline.engine.record import RunRecord
    from wsi_pipeline.engine.runner import encoder_id_of, gather_bags, workflow_task

    config, _ = synthetic_run
    folder = config.output_dir / "cohort"
    rows = pd.read_csv(folder / "cohort.csv", dtype={"patient_id": str})
    # The same file copied (the table refuses one path twice): one content fingerprint, one store entry.
    shutil.copyfile(folder / rows["slide_path"].iloc[0], tmp_path / "copy.tiff")
    copy = rows.iloc[[0]].assign(patient_id="someone-else", slide_id="copy-of-first", slide_path=str(tmp_path / "copy.tiff"))
    table = tmp_path / "cohort.csv"
    pd.concat([rows.assign(slide_path=[str(folder / p) for p in rows["slide_path"]]), copy]).to_csv(table, index=False)
    cohort = load_cohort(table, tmp_path, workflow_task(config.workflow))
    record = RunRecord(config={}, seed=0)
    source = gather_bags(config, cohort, record, encoder_id_of(config))
    (warning,) = record.run_warnings
    first = rows["slide_id"].iloc[0]
    assert f"listed for 2 patients: {rows['patient_id'].iloc[0]} ({first}); someone-else (copy-of-first)" in warning
    assert dict(source.patient_slides)["someone-else"] == dict(source.patient_slides)[rows["patient_id"].iloc[0]]
    # The train stage's key holds what the features are, not only where: a digest of each entry's checksum.
    from wsi_pipeline.store import FeatureStore, features_key, short_hash

    store = FeatureStore(config.store_path)
    uids = {uid for _, entries in source.patient_slides for uid in entries}
    checksums = {uid: store.attrs(features_key(source.encoder_id, source.tiling_id, uid))["features_sha256"] for uid in uids}
    assert all(checksums.values())
    assert source.fingerprint()["features_digest"] == short_hash({"features_sha256": checksums}, length=64)
