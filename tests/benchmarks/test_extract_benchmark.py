"""benchmarks/extract.py runs end to end on a small slide and reports every figure the issue asks for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_extract_benchmark_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, "benchmarks/extract.py", "--json", str(out), "--size", "2048", "--small-size", "1024",
               "--naive-tiles", "16", "--model-seconds", "0.5", "--workdir", str(tmp_path / "work")]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
    results = json.loads(out.read_text())
    assert results["device"] == "cpu" and results["slide"]["tiles"] == 16
    for key in ("naive_tiles_per_s", "data_path_tiles_per_s", "data_path_openslide_tiles_per_s",
                "model_only_tiles_per_s", "end_to_end_tiles_per_s"):
        assert results[key] > 0, key
    assert results["data_path_speedup"] == pytest.approx(results["data_path_tiles_per_s"] / results["naive_tiles_per_s"], rel=0.01)
    assert results["end_to_end_over_model_only"] == pytest.approx(
        results["end_to_end_tiles_per_s"] / results["model_only_tiles_per_s"], rel=0.01)
    assert results["read_path"].startswith("raw JPEG tiles") and "RGB-coded" in results["read_path"]
    assert set(results["peak_rss_mb"]) == {"1024x1024", "2048x2048"} and results["import_rss_mb"] > 0
