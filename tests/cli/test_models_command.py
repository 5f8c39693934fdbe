"""``wsi-pipeline models``: every registry entry with its numbers, and whether its weights are here."""

from __future__ import annotations

import json

from wsi_pipeline.cli.main import main


def run_models(capsys, *args: str) -> str:
    assert main(["models", *args]) == 0
    return capsys.readouterr().out


def test_models_json_lists_every_entry_with_name_dim_and_where_its_weights_are(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("WSI_PIPELINE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "uni").mkdir()
    (tmp_path / "uni" / "pytorch_model.bin").write_bytes(b"stand-in")
    records = {r["name"]: r for r in json.loads(run_models(capsys, "--json"))}
    expected_dims = {"uni": 1024, "uni2-h": 1536, "virchow": 2560, "virchow2": 2560, "h-optimus-0": 1536, "h-optimus-1": 1536,
                     "h0-mini": 768, "gigapath": 1536, "phikon": 768, "phikon-v2": 1024, "resnet50-trunc": 1024,
                     "dinov2-vitb14": 768, "dinov2-vitl14": 1024, "demo-resnet18-random": 512}
    assert {name: r["dim"] for name, r in records.items()} == expected_dims
    assert records["uni"]["weights"] == str(tmp_path / "uni" / "pytorch_model.bin")
    assert records["virchow2"]["weights"] is None and records["demo-resnet18-random"]["weights"] == "none needed"
    h_optimus = records["h-optimus-0"]
    assert h_optimus["mean"] == [0.707223, 0.578729, 0.703617] and h_optimus["input_size"] == [224, 224]
    assert h_optimus["recommended_mpp"] == 0.5 and h_optimus["recommended_tile_px"] == 224


def test_models_table_names_entries_and_missing_weights(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("WSI_PIPELINE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("COLUMNS", "220")
    out = run_models(capsys)
    assert "gigapath" in out and "class_token+mean_patch" in out and "not found" in out and "timm:<any timm model>" in out
