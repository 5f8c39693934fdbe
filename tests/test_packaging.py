"""The package as users install it: a wheel carries the workflow presets, found by name from anywhere."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: What the build reads: the packaging configuration, the readme it names, the package.
BUILD_INPUTS = ("pyproject.toml", "README.md")

PROBE = """
import json, sys
import wsi_pipeline
from wsi_pipeline.config import load_run_config
config = load_run_config(sys.argv[1])
print(json.dumps({"package": wsi_pipeline.__file__, "preset": str(config.preset_path), "name": config.workflow.name}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (the build writes build/ and egg-info beside them)."""
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "wsi_pipeline", source / "wsi_pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    # With setuptools in the environment, build with it and need no index; without it (venvs of
    # Python >= 3.12 have none), pip fetches the build backend as `pip install -e .` did.
    isolation = ["--no-build-isolation", "--no-index"] if importlib.util.find_spec("setuptools") else []
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(dist), str(source)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (built,) = dist.glob("wsi_pipeline-*.whl")
    return built


def test_the_wheel_carries_every_preset_of_the_repository(wheel):
    with zipfile.ZipFile(wheel) as archive:
        packed = {name: archive.read(name) for name in archive.namelist() if name.startswith("wsi_pipeline/workflows/")}
    presets = sorted((REPO / "workflows").glob("*.yaml"))
    assert presets, "the repository's workflows/ folder lists no preset"
    assert packed == {f"wsi_pipeline/workflows/{p.name}": p.read_bytes() for p in presets}


def test_an_installed_wheel_finds_a_preset_by_name_from_any_folder(wheel, tmp_path):
    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    manifest = elsewhere / "manifest.yaml"
    manifest.write_text("workflow: demo\ncohort:\n  synthetic: {n_patients: 10}\noutput: out\n")
    # The installed copy comes first on the path; the venv's site-packages still provides the
    # dependencies (and the editable install's finder, which must lose to the installed copy).
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", PROBE, str(manifest)], cwd=elsewhere, env=env, check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])

    package = Path(found["package"]).resolve()
    assert package == (target / "wsi_pipeline" / "__init__.py").resolve(), found
    assert Path(found["preset"]) == (target / "wsi_pipeline" / "workflows" / "demo.yaml").resolve()
    assert found["name"] == "demo"
    assert REPO not in package.parents
