"""The Dask cluster: a local one by default, or an existing scheduler."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client, LocalCluster

from wsi_pipeline.config.manifest import ClusterConfig
from wsi_pipeline.errors import WSIPipelineError


@contextmanager
def dask_client(config: ClusterConfig, address: str | None = None) -> Iterator[Client]:
    """Yield a Dask client, closing what was started here on exit.

    Parameters
    ----------
    config
        The manifest's ``cluster`` section (workers and threads of a local cluster).
    address
        An existing scheduler to connect to instead (``--scheduler`` or ``cluster.address``).
    """
    if address:
        try:
            client = Client(address, timeout="15s")
        except (OSError, TimeoutError) as error:
            raise WSIPipelineError(
                f"cannot reach the Dask scheduler at {address}: {error}",
                where="cluster.address / --scheduler",
                fix="start the scheduler and workers first, or leave the address empty for a local cluster",
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(
        n_workers=config.n_workers,
        threads_per_worker=config.threads_per_worker,
        processes=True,
        memory_limit=config.memory_limit,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
