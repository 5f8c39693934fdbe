"""Preflight: the paths of a run are checked in the worker processes before any work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from distributed import Client, LocalCluster

from wsi_pipeline.config import load_run_config
from wsi_pipeline.engine.preflight import (
    MOUNT_FIX,
    check_paths_on_workers,
    local_path,
    path_problems,
    worker_paths,
)
from wsi_pipeline.errors import WSIPipelineError


@pytest.fixture(scope="module")
def client():
    """One worker in its own process, as on a cluster node."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


def worker_address(client: Client) -> str:
    (address,) = client.scheduler_info()["workers"]
    return address


def test_existing_paths_pass(client, tmp_path):
    (tmp_path / "slides").mkdir()
    (tmp_path / "cohort.csv").write_text("patient_id,slide_path,label\n")
    check_paths_on_workers(
        client,
        {"slide folder": str(tmp_path / "slides"), "cohort table": str(tmp_path / "cohort.csv"), "output folder": str(tmp_path)},
    )


def test_a_path_missing_on_the_worker_is_named_with_its_label_and_the_worker(client, tmp_path):
    (tmp_path / "slides").mkdir()
    missing = tmp_path / "absent" / "cohort.csv"
    with pytest.raises(WSIPipelineError) as caught:
        check_paths_on_workers(client, {"slide folder": str(tmp_path / "slides"), "cohort table": str(missing)})
    error = caught.value
    assert error.what == (
        f"the workers cannot use path(s) the run needs:\n  cohort table {missing}: does not exist on 1 of 1 worker(s): "
        f"{worker_address(client)} (0)"  # the address and the worker's name
    )
    assert error.where == "cluster workers" and error.fix == MOUNT_FIX
    assert "slide folder" not in error.what  # the path that exists is not reported


def test_the_check_runs_in_the_worker_process(client, tmp_path):
    # Relative paths start from the worker's working folder: moved there, a folder exists for the
    # worker but not for this process, and the verdict must be the worker's.
    (tmp_path / "only-on-the-worker").mkdir()
    assert not Path("only-on-the-worker").exists()
    (before,) = client.run(os.getcwd).values()
    client.run(os.chdir, str(tmp_path))
    try:
        check_paths_on_workers(client, {"slide folder": "only-on-the-worker"})
        assert path_problems({"slide folder": "only-on-the-worker"}) == {"slide folder": "does not exist"}  # here
        with pytest.raises(WSIPipelineError, match="slide folder no-such-folder: does not exist"):
            check_paths_on_workers(client, {"slide folder": "no-such-folder"})
    finally:
        client.run(os.chdir, before)


def test_written_paths_may_be_created_inside_an_existing_parent(client, tmp_path):
    check_paths_on_workers(client, {"feature store": str(tmp_path / "store"), "output folder": str(tmp_path / "run")})
    store = tmp_path / "unmounted" / "store"
    with pytest.raises(WSIPipelineError, match=f"feature store {store}: does not exist, nor its parent {store.parent} on 1 of 1"):
        check_paths_on_workers(client, {"feature store": str(store)})
    # A path that is only read must exist itself.
    with pytest.raises(WSIPipelineError, match="slide folder .*: does not exist on"):
        check_paths_on_workers(client, {"slide folder": str(tmp_path / "store")}, writable=())


def test_urls_are_checked_when_local_and_skipped_when_per_process_or_remote(client, tmp_path):
    assert local_path(f"file://{tmp_path}/store") == f"{tmp_path}/store"
    assert local_path("memory://store") is None and local_path("s3://bucket/store") is None
    check_paths_on_workers(client, {"feature store": "s3://no-such-bucket/store", "cohort table": "memory://cohort.csv"})
    with pytest.raises(WSIPipelineError, match=f"cohort table file://{tmp_path}/absent.csv: does not exist"):
        check_paths_on_workers(client, {"cohort table": f"file://{tmp_path}/absent.csv"})


def test_two_missing_paths_are_reported_together(client, tmp_path):
    with pytest.raises(WSIPipelineError) as caught:
        check_paths_on_workers(client, {"slide folder": str(tmp_path / "a"), "tissue model": str(tmp_path / "b.pt")})
    lines = caught.value.what.splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == [f"slide folder {tmp_path / 'a'}", f"tissue model {tmp_path / 'b.pt'}"]


def test_the_paths_of_a_run_that_workers_open(tmp_path):
    (tmp_path / "slides").mkdir()
    table = tmp_path / "cohort.csv"
    table.write_text("patient_id,slide_path,label\n")
    manifest = {
        "workflow": "demo",
        "cohort": {"table": str(table), "slide_root": "slides"},
        "output": "run",
        "store": "s3://bucket/store",
    }
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    paths = worker_paths(load_run_config(path))
    assert paths == {
        "slide folder": str(tmp_path / "slides"),
        "feature store": "s3://bucket/store",
        "output folder": str(Path(tmp_path / "run").resolve()),
    }
