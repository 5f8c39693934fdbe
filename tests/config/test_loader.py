"""Manifest and preset loading: merging, validation messages, path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wsi_pipeline.config import load_run_config, parse_mpp
from wsi_pipeline.errors import WSIPipelineError

REPO = Path(__file__).resolve().parents[2]


def write_manifest(folder: Path, **fields) -> Path:
    data = {
        "workflow": str(REPO / "workflows" / "demo.yaml"),
        "cohort": {"synthetic": {"n_patients": 10}},
        "output": "out",
        **fields,
    }
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_demo_manifest_loads_with_paths_resolved():
    config = load_run_config(REPO / "data_manifests" / "demo.yaml")
    assert config.workflow.name == "demo"
    assert config.output_dir == (REPO / "runs" / "demo").resolve()
    assert config.store_path == str(config.output_dir / "store")
    assert config.workflow.tiling.mpp == 1.0


def test_overrides_replace_preset_values_deeply(tmp_path):
    path = write_manifest(tmp_path, overrides={"tiling": {"tile_px": 64, "qc": {"min_tissue": 0.3}}})
    config = load_run_config(path)
    assert config.workflow.tiling.tile_px == 64
    assert config.workflow.tiling.qc.min_tissue == 0.3
    assert config.workflow.tiling.qc.max_pen == 0.1  # untouched sibling kept
    assert config.workflow.tiling.tissue.thumbnail_mpp == 8.0


def test_tissue_model_settings_are_validated_and_resolved(tmp_path):
    import pytest

    from wsi_pipeline.errors import WSIPipelineError

    missing = write_manifest(tmp_path, overrides={"tiling": {"tissue": {"method": "model"}}})
    with pytest.raises(WSIPipelineError, match="method 'model' needs a 'model' section"):
        load_run_config(missing)
    path = write_manifest(tmp_path, overrides={"tiling": {"tissue": {"method": "model", "model": {"path": "models/seg.pt", "mpp": 16}}}})
    config = load_run_config(path)
    assert config.workflow.tiling.tissue.model.path == str((tmp_path / "models" / "seg.pt").resolve())


def test_files_read_on_workers_are_resolved_from_the_manifest_folder_not_the_working_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the client's working folder is not the manifest's
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write_manifest(folder, overrides={
        "features": {"weights": "weights/uni.safetensors", "stain_normalisation": {"method": "macenko", "target": "refs"}},
        "tiling": {"tissue": {"method": "model", "model": {"path": "~/seg.pt", "mpp": 16}}},
    })
    workflow = load_run_config(path).workflow
    assert workflow.features.weights == str(folder / "weights" / "uni.safetensors")
    assert workflow.features.stain_normalisation.target == str(folder / "refs")
    assert workflow.tiling.tissue.model.path == str(tmp_path / "home" / "seg.pt")  # ~ expanded, not joined
    # Absolute paths and the built-in stain reference are left as they are.
    absolute = str(tmp_path / "w.pt")
    kept = load_run_config(write_manifest(folder, overrides={
        "features": {"weights": absolute, "stain_normalisation": {"method": "macenko", "target": "default"}},
    })).workflow
    assert kept.features.weights == absolute and kept.features.stain_normalisation.target == "default"


def test_magnification_aliases_and_tolerance(tmp_path):
    path = write_manifest(tmp_path, overrides={"tiling": {"mpp": "40x", "mpp_tolerance": 0.05}})
    tiling = load_run_config(path).workflow.tiling
    assert tiling.mpp == 0.25 and tiling.mpp_tolerance == 0.05


def test_misspelt_key_names_file_field_and_suggestion(tmp_path):
    path = write_manifest(tmp_path, sed=3)
    with pytest.raises(WSIPipelineError) as caught:
        load_run_config(path)
    message = caught.value.format()
    assert str(path) in message
    assert "'sed'" in message and "Did you mean 'seed'" in message


def test_misspelt_override_key_is_reported_under_overrides(tmp_path):
    path = write_manifest(tmp_path, overrides={"model": {"hiden_dim": 3}})
    with pytest.raises(WSIPipelineError, match=r"overrides\.model\.hiden_dim.*Did you mean 'hidden_dim'"):
        load_run_config(path)


def test_missing_cohort_table_is_named(tmp_path):
    path = write_manifest(tmp_path, cohort={"table": "absent.csv"})
    with pytest.raises(WSIPipelineError, match=r"cohort\.table.*absent\.csv"):
        load_run_config(path)


def test_both_cohort_sources_rejected(tmp_path):
    path = write_manifest(tmp_path, cohort={"table": "a.csv", "synthetic": {}})
    with pytest.raises(WSIPipelineError, match="exactly one"):
        load_run_config(path)


def test_unknown_workflow_lists_known_presets(tmp_path):
    path = write_manifest(tmp_path, workflow="nosuch")
    with pytest.raises(WSIPipelineError, match="demo"):
        load_run_config(path)


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("workflow: demo\ncohort: [unclosed\n")
    with pytest.raises(WSIPipelineError, match=r"not valid YAML \(line"):
        load_run_config(path)


def test_scheduler_and_output_overrides(tmp_path):
    path = write_manifest(tmp_path, cluster={"address": "tcp://a:1"})
    config = load_run_config(path, output=tmp_path / "elsewhere", scheduler="tcp://b:2")
    assert config.scheduler_address == "tcp://b:2"
    assert config.output_dir == (tmp_path / "elsewhere").resolve()


@pytest.mark.parametrize(("value", "expected"), [("20x", 0.5), ("40X", 0.25), ("10x", 1.0), (0.5, 0.5), ("0.25", 0.25)])
def test_parse_mpp_aliases(value, expected):
    assert parse_mpp(value) == pytest.approx(expected)


def test_parse_mpp_rejects_nonsense():
    with pytest.raises(ValueError, match="magnification"):
        parse_mpp("twenty")


def test_model_device_is_checked_when_loading(tmp_path):
    assert load_run_config(write_manifest(tmp_path)).workflow.model.device == "auto"
    chosen = load_run_config(write_manifest(tmp_path, overrides={"model": {"device": "cuda:1"}}))
    assert chosen.workflow.model.device == "cuda:1"
    with pytest.raises(WSIPipelineError, match=r"overrides\.model\.device.*'cuda:x'") as error:
        load_run_config(write_manifest(tmp_path, overrides={"model": {"device": "cuda:x"}}))
    assert "'auto', 'cpu', 'cuda' or 'cuda:N'" in str(error.value)


def test_cluster_gpu_settings_default_to_every_visible_gpu(tmp_path):
    cluster = load_run_config(write_manifest(tmp_path)).manifest.cluster
    assert (cluster.gpus, cluster.threads_per_gpu_worker, cluster.dashboard_address) == ("auto", 2, None)
    chosen = load_run_config(write_manifest(tmp_path, cluster={"gpus": 0, "threads_per_gpu_worker": 4})).manifest.cluster
    assert (chosen.gpus, chosen.threads_per_gpu_worker) == (0, 4)
    for bad in (-1, "all"):
        with pytest.raises(WSIPipelineError, match=r"cluster\.gpus"):
            load_run_config(write_manifest(tmp_path, cluster={"gpus": bad}))


def test_store_urls_are_kept_and_local_stores_made_absolute(tmp_path):
    from wsi_pipeline.config.loader import resolve_store

    assert resolve_store("s3://bucket/features", tmp_path, tmp_path / "out") == "s3://bucket/features"
    assert resolve_store("memory://store", tmp_path, tmp_path / "out") == "memory://store"
    assert resolve_store("../shared-store", tmp_path / "m", tmp_path / "out") == str(tmp_path / "shared-store")
    assert resolve_store(None, tmp_path, tmp_path / "out") == str(tmp_path / "out" / "store")


def test_a_bare_preset_name_is_found_inside_the_package(tmp_path):
    import wsi_pipeline
    from wsi_pipeline.config.loader import package_presets

    config = load_run_config(write_manifest(tmp_path, workflow="respred_uc"))
    packaged = Path(wsi_pipeline.__file__).resolve().parent / "workflows"
    assert package_presets().resolve() == packaged
    assert config.preset_path == packaged / "respred_uc.yaml"
    assert config.workflow.name == yaml.safe_load((packaged / "respred_uc.yaml").read_text())["name"]


def test_a_workflows_folder_beside_the_manifest_comes_before_the_packaged_presets(tmp_path):
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "demo.yaml").write_text(yaml.safe_dump({"name": "my-demo"}))
    config = load_run_config(write_manifest(tmp_path, workflow="demo"))
    assert config.workflow.name == "my-demo" and config.preset_path == tmp_path / "workflows" / "demo.yaml"


def test_the_top_level_workflows_folder_is_the_packaged_one():
    # One copy of each preset: the repository's workflows/ links to the package data.
    from wsi_pipeline.config.loader import package_presets

    assert (REPO / "workflows").resolve() == package_presets().resolve()
    assert {p.stem for p in package_presets().glob("*.yaml")} >= {"demo", "respred_uc"}
