"""Task submission: keys unique per run, full tracebacks of unexpected failures kept."""

from __future__ import annotations

import json

import pytest
from distributed import Client, LocalCluster
from rich.console import Console

from wsi_pipeline.engine.outcome import ItemOutcome, guarded
from wsi_pipeline.engine.progress import submit_tasks, wait_for
from wsi_pipeline.engine.record import RunRecord


def echo(tag: str) -> ItemOutcome:
    return ItemOutcome("tile", "slide-1", "done", info={"tag": tag})


def nested_failure() -> ItemOutcome:
    def inner():
        raise ZeroDivisionError("deep inside")

    def work():
        inner()

    return guarded("extract", "slide/2", work)


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def test_two_runs_on_one_scheduler_get_their_own_tasks(client):
    """Same stage and item in two runs at once: each must get its own result, not the other's."""
    first = submit_tasks(client, "tile", echo, [("slide-1", ("run A",))])
    second = submit_tasks(client, "tile", echo, [("slide-1", ("run B",))])
    assert first.futures[0].key != second.futures[0].key
    assert first.futures[0].key.startswith("tile-slide-1-")
    wait_for([first, second], Console(quiet=True))
    assert first.results()[0].info["tag"] == "run A" and second.results()[0].info["tag"] == "run B"


def test_a_failed_item_keeps_its_whole_traceback_in_the_run_folder(client, tmp_path):
    batch = submit_tasks(client, "extract", nested_failure, [("slide/2", ())])
    wait_for([batch], Console(quiet=True))
    (outcome,) = batch.results()
    assert outcome.status == "failed" and "ZeroDivisionError: deep inside" in outcome.reason
    record = RunRecord(config={}, seed=0)
    record.add([outcome])
    record.write(tmp_path / "run.json", "failed items")
    written = json.loads((tmp_path / "run.json").read_text())
    (failed,) = written["failed"]
    assert failed["traceback_file"] == "failures/extract-slide_2.txt" and "traceback" not in failed
    text = (tmp_path / failed["traceback_file"]).read_text()
    # Every frame, not only the last: the task body, the helper, the raise.
    assert "in work" in text and "in inner" in text and "ZeroDivisionError: deep inside" in text


def flaky(counter_file: str, failures: int) -> ItemOutcome:
    """Raises outside any guard ``failures`` times (like a worker-side crash), then succeeds."""
    from pathlib import Path

    counter = Path(counter_file)
    seen = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(seen + 1))
    if seen < failures:
        raise OSError(f"transient failure {seen + 1}")
    return ItemOutcome("extract", "slide-3", "done")


def test_task_restarts_are_counted_per_item_and_in_run_json(client, tmp_path):
    steady = submit_tasks(client, "tile", echo, [("slide-1", ("once",))])
    restarted = submit_tasks(client, "extract", flaky, [("slide-3", (str(tmp_path / "count"), 2))], retries=2)
    wait_for([steady, restarted], Console(quiet=True))
    assert steady.results()[0].attempts == 1
    (outcome,) = restarted.results()
    assert outcome.status == "done" and outcome.attempts == 3
    record = RunRecord(config={}, seed=0)
    record.add(steady.results() + restarted.results())
    record.write(tmp_path / "run.json", "ok")
    written = json.loads((tmp_path / "run.json").read_text())
    assert written["retries"] == {"tile": 0, "extract": 2}
    assert [item["attempts"] for item in written["items"]] == [1, 3]
