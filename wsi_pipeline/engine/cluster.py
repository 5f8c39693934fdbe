"""The Dask cluster: a local one by default, an existing scheduler, or batch jobs on an HPC cluster.

Extraction tasks (and MIL training on a GPU) hold the worker resource ``GPU`` while they run,
so they go only to workers that advertise it, one at a time per worker. A local cluster is
built here worker by worker (:func:`local_worker_specs`): one worker per visible GPU, each
seeing only its own GPU, plus CPU workers for tiling. On SLURM, PBS and LSF
(:func:`jobqueue_cluster`, through dask-jobqueue) each job runs one worker per GPU, each pinned
to its own GPU by :func:`dask_setup` and advertising ``GPU=1``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from distributed import Client, Nanny, Scheduler, SpecCluster
from distributed.security import Security

from wsi_pipeline.config.manifest import (
    CLUSTER_MODES,
    JOBQUEUE_MODES,
    ClusterConfig,
    JobsConfig,
    TLSConfig,
)
from wsi_pipeline.errors import WSIPipelineError

if TYPE_CHECKING:
    from wsi_pipeline.config.loader import RunConfig

#: The worker resource an encoder (or a GPU-trained aggregator) holds while it runs.
GPU = "GPU"
GPU_SLOT: dict[str, float] = {GPU: 1}

#: Names of the workers of a local cluster: the layout is read back from them.
GPU_WORKER, CPU_WORKER = "gpu", "cpu"

#: What to install for modes slurm, pbs and lsf.
HPC_EXTRA_FIX = "pip install 'wsi-pipeline[hpc]' (dask-jobqueue) in the environment that starts the run"

#: Worker preload that pins each worker process of a multi-GPU job to its own GPU (:func:`dask_setup`).
GPU_PIN_PRELOAD = __name__


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


def _job_layout(cluster: object, dashboard: str | None) -> ClusterLayout | None:
    """The layout of a jobqueue cluster started here, from its jobs (workers may still be queued)."""
    plan = _JOB_PLANS.get(cluster) if cluster is not None else None  # None: an external scheduler
    if plan is None:
        return None
    mode, jobs = plan
    workers, threads = jobs.workers_per_job, jobs.threads_per_worker
    if jobs.adaptive is None:
        size, most_jobs = _plural(jobs.n_jobs, "job"), jobs.n_jobs
    else:
        size, most_jobs = f"{jobs.adaptive.minimum_jobs}-{jobs.adaptive.maximum_jobs} jobs (adaptive)", jobs.adaptive.maximum_jobs
    # Every worker of a job holds one slot: its GPU, or, in a CPU job, its cores standing in for one,
    # as on a local cluster without GPUs. Counted from the plan: at this point the jobs may still wait in the queue.
    slots = most_jobs * workers
    upto = "up to " if jobs.adaptive is not None else ""
    where = f"{_plural(jobs.gpus_per_job, 'GPU')} per job" if jobs.gpus_per_job else "CPU jobs: encoder on CPU"
    description = (
        f"{mode}: {size} x {_plural(workers, 'worker')} x {_plural(threads, 'thread')}, "
        f"GPU slots: {upto}{slots} ({where})"
    )
    return ClusterLayout(description, slots, jobs.gpus_per_job > 0, dashboard)


def cluster_layout(client: Client) -> ClusterLayout:
    """Describe the cluster a client is connected to: a local or jobqueue one built here, or any other."""
    dashboard = dashboard_link(client)
    jobs = _job_layout(client.cluster, dashboard)
    if jobs is not None:
        return jobs
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


# -- existing schedulers over TLS -----------------------------------------------------------------
def tls_security(tls: TLSConfig) -> Security:
    """The client side of a TLS scheduler: its CA and this client's certificate and key.

    ``require_encryption`` refuses plain ``tcp://`` connections, so a mistyped address fails
    instead of sending the run's data unencrypted.
    """
    return Security(tls_ca_file=tls.ca_file, tls_client_cert=tls.cert, tls_client_key=tls.key, require_encryption=True)


# -- batch systems (dask-jobqueue) -----------------------------------------------------------------
#: Jobs of the jobqueue clusters started here, for :func:`cluster_layout` (by cluster object).
_JOB_PLANS: weakref.WeakKeyDictionary[Any, tuple[str, JobsConfig]] = weakref.WeakKeyDictionary()


def jobqueue_class(mode: str) -> type:
    """The dask-jobqueue cluster class of a mode, imported only when a batch system is used.

    Raises
    ------
    WSIPipelineError
        When dask-jobqueue is not installed.
    """
    try:
        import dask_jobqueue
    except ImportError:
        raise WSIPipelineError(
            f"cluster mode '{mode}' submits the workers as batch jobs with dask-jobqueue, which is not installed",
            where="cluster.mode",
            fix=HPC_EXTRA_FIX,
        ) from None
    classes = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster, "lsf": dask_jobqueue.LSFCluster}
    return classes[mode]


def _walltime(mode: str, walltime: str) -> str:
    """The time limit in the batch system's syntax.

    SLURM reads ``MM:SS`` from two fields, so ``HH:MM`` becomes ``HH:MM:00``; LSF's ``-W`` takes
    ``HH:MM`` only, so seconds round up to the next minute rather than shortening the job.
    """
    parts = [int(p) for p in walltime.split(":")]
    hours, minutes, seconds = (parts + [0])[:3]
    if mode == "lsf":
        total = hours * 60 + minutes + (1 if seconds else 0)
        return f"{total // 60:02d}:{total % 60:02d}"
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}"


def jobqueue_options(config: ClusterConfig) -> dict[str, Any]:
    """Keyword arguments of the dask-jobqueue cluster of ``config`` (a slurm, pbs or lsf mode).

    Every worker advertises ``GPU=1``: in a GPU job it is its own GPU (one worker process per
    GPU, each pinned by :func:`dask_setup`); in a CPU job the worker's cores stand in for one,
    so extraction runs one slide at a time per worker, as on a local cluster without GPUs.
    """
    from dask.utils import parse_bytes

    jobs = config.jobs
    if jobs is None or config.mode not in JOBQUEUE_MODES:
        raise ValueError(f"jobqueue options need a mode among {JOBQUEUE_MODES} with a jobs section, not {config.mode!r}")
    workers, gpus = jobs.workers_per_job, jobs.gpus_per_job
    worker_args = ["--resources", f"{GPU}=1"]
    if gpus > 1:
        worker_args += ["--preload", GPU_PIN_PRELOAD]
    directives = list(jobs.job_extra_directives)
    options: dict[str, Any] = {
        "cores": jobs.cores,
        "memory": jobs.memory,
        "processes": workers,
        "walltime": _walltime(config.mode, jobs.walltime),
        "queue": jobs.queue,
        "job_script_prologue": list(jobs.job_script_prologue),
        "worker_extra_args": worker_args,
        "local_directory": jobs.local_directory,
        "log_directory": jobs.log_directory,
        "python": jobs.python,
        "interface": jobs.interface,
        "silence_logs": logging.ERROR,
        # As for a local cluster: the dashboard only when asked for (it needs bokeh).
        # Without a dashboard, its HTTP server (health, metrics) takes any free port rather than 8787,
        # which another cluster on a shared login node may hold.
        "scheduler_options": {"dashboard": config.dashboard_address is not None, "dashboard_address": config.dashboard_address or ":0"},
    }
    if config.mode == "slurm":
        options["account"] = jobs.account
        if gpus:
            directives.insert(0, f"--gres=gpu:{gpus}")
    elif config.mode == "pbs":
        from dask_jobqueue.pbs import pbs_format_bytes_ceil

        options["account"] = jobs.account
        # PBS takes GPUs in the select statement, so the whole spec is written here.
        spec = f"select=1:ncpus={jobs.cores}:mem={pbs_format_bytes_ceil(parse_bytes(jobs.memory))}"
        options["resource_spec"] = spec + (f":ngpus={gpus}" if gpus else "")
    else:
        options["project"] = jobs.account  # LSF's -P
        if gpus:
            directives.insert(0, f'-gpu "num={gpus}"')
    options["job_extra_directives"] = directives
    return options


def jobqueue_cluster(config: ClusterConfig) -> Any:
    """Build the dask-jobqueue cluster of ``config``: its scheduler starts here, no job is submitted.

    Raises
    ------
    WSIPipelineError
        When dask-jobqueue is missing or rejects the ``jobs`` settings.
    """
    cls = jobqueue_class(config.mode)
    try:
        cluster = cls(**jobqueue_options(config))
    except (ValueError, TypeError) as error:
        raise WSIPipelineError(
            f"dask-jobqueue rejected the {config.mode} job settings: {error}", where="cluster.jobs", fix="correct cluster.jobs"
        ) from None
    assert config.jobs is not None  # checked by jobqueue_options
    _JOB_PLANS[cluster] = (config.mode, config.jobs)
    return cluster


def job_script(config: ClusterConfig) -> str:
    """The batch script one worker job of ``config`` would run (for ``--dry-run``), submitting nothing."""
    cluster = jobqueue_cluster(config)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def start_jobs(cluster: Any, config: ClusterConfig) -> None:
    """Submit the jobs of ``config``: ``n_jobs`` now, or adaptive scaling between its bounds.

    Raises
    ------
    WSIPipelineError
        When the batch system's submit command is missing or refuses a job.
    """
    jobs = config.jobs
    assert jobs is not None
    submit = cluster.job_cls.submit_command
    if shutil.which(submit) is None:
        raise WSIPipelineError(
            f"'{submit}' is not on PATH: mode '{config.mode}' submits the worker jobs with it",
            where="cluster.mode",
            fix=f"start the run on a node where '{submit}' works (a login node), or choose another cluster.mode",
        )
    if jobs.adaptive is not None:
        cluster.adapt(minimum_jobs=jobs.adaptive.minimum_jobs, maximum_jobs=jobs.adaptive.maximum_jobs)
        return
    try:
        cluster.sync(_submit_jobs, cluster, jobs.n_jobs)
    except RuntimeError as error:
        # A job whose submission failed never started; marked failed, the cluster can close
        # (distributed asserts that every worker it created has stopped or failed).
        from distributed.core import Status

        for job in list(cluster.workers.values()):
            if job.status == Status.created:
                job.status = Status.failed
        stderr = str(error).split("stderr:", 1)[-1].strip() or str(error).strip()
        raise WSIPipelineError(
            f"the batch system refused the worker job: {stderr}",
            where="cluster.jobs",
            fix="check cluster.jobs (queue, account, walltime, cores, memory) against the site's limits",
        ) from None


async def _submit_jobs(cluster: Any, n_jobs: int) -> None:
    """Submit ``n_jobs`` jobs and return once each submission has been answered.

    ``cluster.scale`` would submit from a background callback, where a refused job (unknown
    partition, no account) is only logged and the run would wait for workers forever; adding the
    jobs to the spec and correcting the state here raises the submit command's error instead.
    """
    while len(cluster.worker_spec) < n_jobs:
        cluster.worker_spec.update(cluster.new_worker_spec())
    await cluster._correct_state()


def dask_setup(worker: Any) -> None:
    """Worker preload of a multi-GPU job: pin this worker process to its own GPU.

    The job's worker processes are named ``<job>-0``, ``<job>-1``, ... and all see every GPU of
    the job; worker *i* keeps only the *i*-th (of ``CUDA_VISIBLE_DEVICES`` when the batch system
    set it), so ``cuda`` in each worker is a different device. It runs before any task, so before
    CUDA is initialised in the process.

    Raises
    ------
    RuntimeError
        When the job shows fewer GPUs than it has workers (the worker then does not start,
        rather than sharing a GPU unnoticed).
    """
    index = int(str(worker.name).rsplit("-", 1)[-1])
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if visible and index >= len(visible):
        raise RuntimeError(f"worker {worker.name} would use GPU #{index} but the job shows CUDA_VISIBLE_DEVICES={visible}")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu_device_ids(index + 1)[index]


# -- the client ------------------------------------------------------------------------------------
def with_cluster_mode(config: RunConfig, mode: str, scheduler: str | None = None) -> RunConfig:
    """A run configuration with ``cluster.mode`` replaced (the CLI's ``--cluster MODE``).

    Parameters
    ----------
    config
        The loaded run configuration.
    mode
        local, address, slurm, pbs or lsf.
    scheduler
        The CLI's ``--scheduler``, if given: the address for mode ``address``, an error with any other.

    Raises
    ------
    WSIPipelineError
        When the manifest lacks what the mode needs, or ``--scheduler`` contradicts it.
    """
    from pydantic import ValidationError

    if mode not in CLUSTER_MODES:
        raise WSIPipelineError(
            f"unknown cluster mode {mode!r}", where="--cluster", fix=f"use one of: {', '.join(CLUSTER_MODES)}"
        )
    if scheduler and mode != "address":
        raise WSIPipelineError(
            f"--scheduler connects to an existing scheduler, but --cluster {mode} starts its own",
            where="--scheduler / --cluster",
            fix="give one of them (or --cluster address with --scheduler)",
        )
    try:
        cluster = config.manifest.cluster.with_mode(mode, address=scheduler or config.scheduler_address)
    except ValidationError as error:
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
        raise WSIPipelineError(
            f"cluster mode '{mode}' does not fit the manifest's cluster section: {reasons}",
            where=f"--cluster {mode} ({config.manifest_path})",
            fix=f"add what mode '{mode}' needs to the cluster section (see data_manifests/cluster-{mode}.yaml)",
        ) from None
    manifest = config.manifest.model_copy(update={"cluster": cluster})
    return replace(config, manifest=manifest, scheduler_address=cluster.address)


@contextmanager
def dask_client(config: ClusterConfig, address: str | None = None) -> Iterator[Client]:
    """Yield a Dask client, closing what was started here on exit.

    Parameters
    ----------
    config
        The manifest's ``cluster`` section: by its ``mode``, a local cluster (see
        :func:`local_worker_specs`), an existing scheduler (``address``, with ``tls``), or a
        scheduler here with workers in SLURM, PBS or LSF jobs (:func:`jobqueue_cluster`).
    address
        An existing scheduler to connect to instead, whatever the mode (``--scheduler``).
    """
    address = address or (config.address if config.mode == "address" else None)
    if address:
        security = tls_security(config.tls) if config.tls is not None else None
        try:
            client = Client(address, timeout="15s", security=security)
        except TypeError as error:
            # distributed's way of saying that a tls:// address came without certificates.
            if not address.startswith("tls://"):
                raise
            raise WSIPipelineError(
                f"{address} is a TLS scheduler, but no client certificates are configured ({error})",
                where="cluster.tls",
                fix="add cluster.tls with ca_file, cert and key (or set distributed.comm.tls in the Dask configuration)",
            ) from None
        except (OSError, TimeoutError) as error:
            raise WSIPipelineError(
                f"cannot reach the Dask scheduler at {address}: {error}",
                where="cluster.address / --scheduler",
                fix="start the scheduler and workers first (with TLS: check cluster.tls and the tls:// address), "
                "or leave the address empty for a local cluster",
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    if config.mode in JOBQUEUE_MODES:
        cluster = jobqueue_cluster(config)
    else:
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
        if config.mode in JOBQUEUE_MODES:
            start_jobs(cluster, config)
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    try:
        yield client
    finally:
        client.close()
        cluster.close()
