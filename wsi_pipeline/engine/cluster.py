"""The Dask cluster: a local one by default, or an existing scheduler.

Extraction tasks (and MIL training on a GPU) hold the worker resource ``GPU`` while they run,
so they go only to workers that advertise it, one at a time per worker. A local cluster is
built here worker by worker (:func:`local_worker_specs`): one worker per visible GPU, each
seeing only its own GPU, plus CPU workers for tiling.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from distributed import Client, Nanny, Scheduler, SpecCluster

from wsi_pipeline.config.manifest import ClusterConfig
from wsi_pipeline.errors import WSIPipelineError

#: The worker resource an encoder (or a GPU-trained aggregator) holds while it runs.
GPU = "GPU"
GPU_SLOT: dict[str, float] = {GPU: 1}

#: Names of the workers of a local cluster: the layout is read back from them.
GPU_WORKER, CPU_WORKER = "gpu", "cpu"


def count_gpus() -> int:
    """Number of CUDA devices this process sees (0 without a CUDA build of torch).

    torch is imported here, not at module level: connecting to a cluster should not pay for it
    when no GPU is involved, and the count does not create a CUDA context.
    """
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count())


def gpu_device_ids(n: int) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` values of the first ``n`` visible GPUs.

    When this process is itself limited to some GPUs (a SLURM allocation sets
    ``CUDA_VISIBLE_DEVICES=2,3``), GPU *i* of torch is the *i*-th of that list, not physical *i*.
    """
    parent = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return parent[:n] if parent else [str(i) for i in range(n)]


def local_worker_specs(config: ClusterConfig) -> dict[str, dict[str, Any]]:
    """Per-worker specs of a local cluster (``SpecCluster(workers=...)``), without starting anything.

    - One GPU worker per GPU (``config.gpus``; ``'auto'`` = every visible GPU): it sees only its
      own GPU (``CUDA_VISIBLE_DEVICES``), so ``cuda`` on it is that GPU, and it advertises
      ``{"GPU": 1}``: extraction goes only there, one slide at a time per GPU.
    - ``config.n_workers`` CPU workers for tiling (and training on the CPU); they see no GPU, so a
      tiling task never takes memory on a GPU an encoder needs.
    - Without GPU workers, the CPU workers each advertise ``{"GPU": 1}`` themselves: the CPU stands
      in for the accelerator, so the same task graph runs unchanged, and each worker embeds one
      slide at a time (its torch threads already use the worker's cores; two encoders per
      worker would only share them and double the memory).

    Raises
    ------
    WSIPipelineError
        When ``config.gpus`` asks for more GPUs than are visible.
    """
    visible = count_gpus() if config.gpus == "auto" or config.gpus > 0 else 0
    n_gpus = visible if config.gpus == "auto" else config.gpus
    if n_gpus > visible:
        raise WSIPipelineError(
            f"cluster.gpus is {n_gpus} but this machine shows {visible} CUDA device(s)",
            where="cluster.gpus",
            fix="use 'auto' (every visible GPU) or at most the number of GPUs; 0 runs the encoder on the CPU workers",
        )
    common = {"host": "127.0.0.1", "memory_limit": config.memory_limit, "dashboard": False, "silence_logs": logging.ERROR}
    specs: dict[str, dict[str, Any]] = {}
    for index, device in enumerate(gpu_device_ids(n_gpus)):
        options = {**common, "nthreads": config.threads_per_gpu_worker, "resources": dict(GPU_SLOT),
                   "env": {"CUDA_VISIBLE_DEVICES": device}}
        specs[f"{GPU_WORKER}-{index}"] = {"cls": Nanny, "options": options}
    for index in range(config.n_workers):
        options = {**common, "nthreads": config.threads_per_worker, "env": {"CUDA_VISIBLE_DEVICES": ""}}
        if not n_gpus:
            options["resources"] = dict(GPU_SLOT)
        specs[f"{CPU_WORKER}-{index}"] = {"cls": Nanny, "options": options}
    return specs


@dataclass(frozen=True)
class ClusterLayout:
    """What a connected cluster offers the stages.

    Attributes
    ----------
    description
        One line for the console and the run record.
    gpu_slots
        Workers advertising the ``GPU`` resource. None: tasks must be submitted without it,
        or they would wait forever.
    real_gpus
        Whether those slots are GPUs (false where the CPU workers of a local cluster stand in).
    dashboard
        The dashboard's address, when the scheduler serves one.
    """

    description: str
    gpu_slots: int
    real_gpus: bool
    dashboard: str | None = None

    @property
    def encoder_resources(self) -> dict[str, float] | None:
        """Resources of an extraction task: a GPU slot, when some worker has one."""
        return dict(GPU_SLOT) if self.gpu_slots else None

    def training_resources(self, device: str) -> dict[str, float] | None:
        """Resources of a training task: a GPU slot when MIL is to run on a real GPU."""
        return dict(GPU_SLOT) if self.real_gpus and self.gpu_slots and device != "cpu" else None

    @property
    def warning(self) -> str | None:
        """Why tasks will not be placed by GPU, when no worker advertises one."""
        if self.gpu_slots:
            return None
        return (
            "no worker of the scheduler advertises the 'GPU' resource, so extraction runs on any worker, "
            "as many at once as it has threads; start GPU workers with `dask worker <scheduler> --resources GPU=1` "
            "(one per GPU) to place the encoder on them"
        )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _scheduler_serves_dashboard(dask_scheduler: Scheduler) -> bool:
    # A scheduler always serves HTTP (health, metrics); the dashboard's module is imported only
    # when it was asked for and bokeh is installed.
    import sys

    return "distributed.dashboard.scheduler" in sys.modules


def dashboard_link(client: Client) -> str | None:
    """The dashboard's address when the scheduler serves one, else ``None``."""
    cluster = client.cluster
    if isinstance(cluster, SpecCluster):  # the scheduler runs in this process: ask its spec
        serves = bool(cluster.scheduler_spec.get("options", {}).get("dashboard")) and importlib.util.find_spec("bokeh") is not None
    else:
        try:
            serves = bool(client.run_on_scheduler(_scheduler_serves_dashboard))
        except Exception:  # noqa: BLE001 - a scheduler may refuse remote calls; the link is a convenience
            serves = False
    return client.dashboard_link if serves else None


def cluster_layout(client: Client) -> ClusterLayout:
    """Describe the cluster a client is connected to: the local one built here, or any other."""
    dashboard = dashboard_link(client)
    spec = getattr(client.cluster, "worker_spec", None) or {}
    if spec and all(str(name).startswith((f"{GPU_WORKER}-", f"{CPU_WORKER}-")) for name in spec):
        gpu = [s["options"] for name, s in spec.items() if str(name).startswith(GPU_WORKER)]
        cpu = [s["options"] for name, s in spec.items() if str(name).startswith(CPU_WORKER)]
        cpu_threads = cpu[0]["nthreads"] if cpu else 0
        parts = [f"local cluster: {_plural(len(cpu), 'CPU worker')} x {_plural(cpu_threads, 'thread')}"]
        if gpu:
            devices = ", ".join(o["env"]["CUDA_VISIBLE_DEVICES"] for o in gpu)
            parts.append(f"{_plural(len(gpu), 'GPU worker')} x {_plural(gpu[0]['nthreads'], 'thread')} (CUDA {devices})")
            slots = len(gpu)
        else:
            parts.append("0 GPU workers (encoder on CPU)")
            slots = sum(GPU in o.get("resources", {}) for o in cpu)
        return ClusterLayout(", ".join(parts), slots, bool(gpu), dashboard)
    workers = client.scheduler_info()["workers"].values()
    slots = sum(GPU in (w.get("resources") or {}) for w in workers)
    threads = sum(w.get("nthreads", 0) for w in workers)
    gpus = f"{slots} advertise GPU" if slots else "none advertises GPU"
    description = f"scheduler {client.scheduler.address}: {_plural(len(workers), 'worker')}, {_plural(threads, 'thread')}, {gpus}"
    return ClusterLayout(description, slots, slots > 0, dashboard)


@contextmanager
def dask_client(config: ClusterConfig, address: str | None = None) -> Iterator[Client]:
    """Yield a Dask client, closing what was started here on exit.

    Parameters
    ----------
    config
        The manifest's ``cluster`` section (the workers of a local cluster, see
        :func:`local_worker_specs`).
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
    scheduler = {
        "cls": Scheduler,
        "options": {
            "host": "127.0.0.1",
            "port": 0,
            "dashboard": config.dashboard_address is not None,
            "dashboard_address": config.dashboard_address,
        },
    }
    cluster = SpecCluster(workers=local_worker_specs(config), scheduler=scheduler, silence_logs=logging.ERROR)
    try:
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    try:
        yield client
    finally:
        client.close()
        cluster.close()
