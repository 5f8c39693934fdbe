"""Cluster modes: local, an existing scheduler (with TLS), and SLURM / PBS / LSF jobs through dask-jobqueue.

No batch system runs here: job scripts are generated and read, and one test submits through a
stand-in ``sbatch`` that runs the script in the background, as a node would.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dask.utils import format_bytes, parse_bytes
from distributed import Client, LocalCluster
from distributed.security import Security

from wsi_pipeline.cli.main import main
from wsi_pipeline.config import ClusterConfig, load_run_config
from wsi_pipeline.engine import cluster as cluster_module
from wsi_pipeline.engine.cluster import (
    GPU_PIN_PRELOAD,
    cluster_layout,
    dask_client,
    job_script,
    jobqueue_cluster,
    tls_security,
    with_cluster_mode,
)
from wsi_pipeline.errors import WSIPipelineError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "data_manifests"


def write_manifest(folder: Path, cluster: dict) -> Path:
    data = {"workflow": "demo", "cohort": {"synthetic": {"n_patients": 8}}, "output": "out", "cluster": cluster}
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def jobs(**fields) -> dict:
    base = {"queue": "gpu", "account": "acct", "walltime": "02:00:00", "cores": 8, "memory": "64GiB"}
    return {**base, **fields}


def worker_command(script: str) -> list[str]:
    (line,) = [line for line in script.splitlines() if "distributed.cli.dask_worker" in line]
    return shlex.split(line)


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


# -- the example manifests -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "mode", "workers_per_job", "worker_threads"),
    [("local", "local", None, 1), ("address", "address", None, 1), ("slurm", "slurm", 2, 8), ("pbs", "pbs", 2, 8), ("lsf", "lsf", 1, 8)],
)
def test_each_example_manifest_loads_in_its_mode(name, mode, workers_per_job, worker_threads):
    config = load_run_config(EXAMPLES / f"cluster-{name}.yaml")
    cluster = config.manifest.cluster
    assert cluster.mode == mode
    assert (cluster.jobs.workers_per_job if cluster.jobs else None) == workers_per_job
    assert cluster.worker_threads == worker_threads
    assert config.scheduler_address == ("tcp://scheduler.example.org:8786" if mode == "address" else None)


def test_the_batch_examples_make_job_scripts_with_their_gpus():
    scripts = {name: job_script(load_run_config(EXAMPLES / f"cluster-{name}.yaml").manifest.cluster) for name in ("slurm", "pbs", "lsf")}
    assert "#SBATCH --gres=gpu:2" in scripts["slurm"] and "#SBATCH --constraint=a100" in scripts["slurm"]
    assert "#PBS -l select=1:ncpus=16:mem=120GB:ngpus=2" in scripts["pbs"]  # 128 GB = 119.2 GiB, rounded up
    assert '#BSUB -gpu "num=1"' in scripts["lsf"] and "#BSUB -W 04:00" in scripts["lsf"]


# -- the mode and its keys -------------------------------------------------------------------------
def test_a_manifest_with_only_an_address_is_in_address_mode(tmp_path):
    config = load_run_config(write_manifest(tmp_path, {"address": "tcp://10.0.0.1:8786", "n_workers": 3}))
    assert config.manifest.cluster.mode == "address" and config.scheduler_address == "tcp://10.0.0.1:8786"
    assert load_run_config(write_manifest(tmp_path, {"address": None, "n_workers": 3})).manifest.cluster.mode == "local"
    assert ClusterConfig().mode == "local"


def test_an_unknown_key_in_the_jobs_is_rejected_with_a_suggestion(tmp_path):
    with pytest.raises(WSIPipelineError, match=r"field 'cluster\.jobs\.walltim': unknown key\. Did you mean 'walltime'\?"):
        load_run_config(write_manifest(tmp_path, {"mode": "slurm", "jobs": {**jobs(), "walltim": "01:00:00"}}))
    with pytest.raises(WSIPipelineError, match=r"cluster\.mod': unknown key\. Did you mean 'mode'\?"):
        load_run_config(write_manifest(tmp_path, {"mod": "slurm"}))
    with pytest.raises(WSIPipelineError, match=r"cluster\.mode'.*'local', 'address', 'slurm', 'pbs' or 'lsf'"):
        load_run_config(write_manifest(tmp_path, {"mode": "kubernetes"}))


def test_an_address_with_a_batch_mode_is_an_error(tmp_path):
    with pytest.raises(WSIPipelineError, match=r"'address' is for mode 'address'.*mode is 'slurm'"):
        load_run_config(write_manifest(tmp_path, {"mode": "slurm", "address": "tcp://h:8786", "jobs": jobs()}))
    with pytest.raises(WSIPipelineError, match="mode 'address' needs 'address'"):
        load_run_config(write_manifest(tmp_path, {"mode": "address"}))
    with pytest.raises(WSIPipelineError, match="mode 'slurm' needs a 'jobs' section"):
        load_run_config(write_manifest(tmp_path, {"mode": "slurm"}))
    with pytest.raises(WSIPipelineError, match="'jobs' is for modes slurm, pbs, lsf, not mode 'local'"):
        load_run_config(write_manifest(tmp_path, {"jobs": jobs()}))


def test_local_worker_keys_are_refused_in_a_batch_mode(tmp_path):
    with pytest.raises(WSIPipelineError, match=r"n_workers, threads_per_worker shape\(s\) a local cluster only"):
        load_run_config(write_manifest(tmp_path, {"mode": "pbs", "n_workers": 4, "threads_per_worker": 2, "jobs": jobs()}))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"processes": 4, "gpus_per_job": 2}, r"processes \(4\) must equal gpus_per_job \(2\)"),
        ({"cores": 6, "processes": 4}, r"cores \(6\) must be a multiple of the 4 worker process"),
        ({"n_jobs": 2, "adaptive": {"maximum_jobs": 4}}, "either n_jobs .* or adaptive"),
        ({"adaptive": {"minimum_jobs": 5, "maximum_jobs": 4}}, r"minimum_jobs \(5\) is above maximum_jobs \(4\)"),
        ({"walltime": "2h"}, r"cluster\.jobs\.walltime'.*HH:MM:SS"),
        ({"memory": "lots"}, r"cluster\.jobs\.memory'.*'64GB'"),
        ({"job_extra_directives": ["#SBATCH --exclusive"]}, "without its '#...' prefix"),
    ],
)
def test_inconsistent_jobs_are_rejected(tmp_path, fields, message):
    with pytest.raises(WSIPipelineError, match=message):
        load_run_config(write_manifest(tmp_path, {"mode": "slurm", "jobs": jobs(**fields)}))


# -- TLS -------------------------------------------------------------------------------------------
def test_a_missing_tls_file_is_an_error_naming_its_field(tmp_path):
    ca, key = tmp_path / "ca.pem", tmp_path / "key.pem"
    ca.write_text("ca")
    key.write_text("key")
    tls = {"ca_file": str(ca), "cert": str(tmp_path / "absent.pem"), "key": str(key)}
    with pytest.raises(WSIPipelineError, match=rf"field 'cluster\.tls\.cert'.*file not found: {tmp_path / 'absent.pem'}") as caught:
        load_run_config(write_manifest(tmp_path, {"address": "tls://h:8786", "tls": tls}))
    assert "cluster.tls.ca_file" not in str(caught.value) and "cluster.tls.key" not in str(caught.value)
    with pytest.raises(WSIPipelineError, match=r"field 'cluster\.tls\.key'.*absolute path"):
        load_run_config(write_manifest(tmp_path, {"address": "tls://h:8786", "tls": {**tls, "cert": str(ca), "key": "key.pem"}}))
    with pytest.raises(WSIPipelineError, match="must start with tls://"):
        load_run_config(write_manifest(tmp_path, {"address": "tcp://h:8786", "tls": {**tls, "cert": str(ca)}}))


def test_tls_files_become_a_security_that_requires_encryption(tmp_path):
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text(name)
    config = ClusterConfig(
        address="tls://h:8786", tls={"ca_file": str(tmp_path / "ca.pem"), "cert": str(tmp_path / "cert.pem"), "key": str(tmp_path / "key.pem")}
    )
    security = tls_security(config.tls)
    assert (security.tls_ca_file, security.tls_client_cert, security.tls_client_key) == tuple(
        str(tmp_path / n) for n in ("ca.pem", "cert.pem", "key.pem")
    )
    assert security.require_encryption is True


@pytest.fixture
def certificates(tmp_path):
    """A CA and one certificate it signed (scheduler and client share it), made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    run = lambda *args: subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "req.csr", "-subj", "/CN=localhost")
    run("x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-out", "cert.pem", "-days", "2")
    return {"ca_file": str(tmp_path / "ca.pem"), "cert": str(tmp_path / "cert.pem"), "key": str(tmp_path / "key.pem")}


def test_the_client_reaches_a_tls_scheduler_with_the_manifest_certificates(certificates):
    server = Security(
        tls_ca_file=certificates["ca_file"], tls_scheduler_cert=certificates["cert"], tls_scheduler_key=certificates["key"],
        tls_worker_cert=certificates["cert"], tls_worker_key=certificates["key"],
        tls_client_cert=certificates["cert"], tls_client_key=certificates["key"], require_encryption=True,
    )
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls://", host="127.0.0.1",
                      security=server, dashboard_address=":0") as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        with dask_client(ClusterConfig(address=address, tls=certificates)) as client:
            assert client.submit(lambda x: x + 1, 41).result(timeout=30) == 42
        # Without certificates (and none in the Dask configuration), the address alone does not connect.
        with (
            pytest.raises(WSIPipelineError, match="is a TLS scheduler, but no client certificates are configured") as caught,
            dask_client(ClusterConfig(address=address)),
        ):
            pass
        assert caught.value.where == "cluster.tls"


# -- job scripts -------------------------------------------------------------------------------------
PROLOGUE = ["module load cuda/12.4", "source activate wsi"]


def test_slurm_job_script_carries_the_resources_and_one_gpu_worker_per_gpu():
    config = ClusterConfig(mode="slurm", jobs=jobs(gpus_per_job=2, job_script_prologue=PROLOGUE, job_extra_directives=["--exclusive"]))
    script = job_script(config)
    lines = script.splitlines()
    for directive in ("#SBATCH -p gpu", "#SBATCH -A acct", "#SBATCH -t 02:00:00", "#SBATCH --cpus-per-task=8",
                      "#SBATCH --mem=64G", "#SBATCH --gres=gpu:2", "#SBATCH --exclusive"):
        assert directive in lines, directive
    # The prologue runs after the directives and before the workers start.
    assert lines.index(PROLOGUE[0]) > lines.index("#SBATCH --exclusive")
    assert lines.index(PROLOGUE[1]) < lines.index(next(line for line in lines if "dask_worker" in line))
    command = worker_command(script)
    assert command[0] == sys.executable
    assert option(command, "--nworkers") == "2" and option(command, "--nthreads") == "4"
    assert option(command, "--memory-limit") == format_bytes(parse_bytes("64GiB") / 2).replace(" ", "") == "32.00GiB"
    assert option(command, "--resources") == "GPU=1" and option(command, "--preload") == GPU_PIN_PRELOAD


def test_pbs_job_script_asks_for_gpus_in_the_select_statement():
    config = ClusterConfig(mode="pbs", jobs=jobs(gpus_per_job=2, memory="64GB", walltime="02:00", job_script_prologue=PROLOGUE))
    script = job_script(config)
    lines = script.splitlines()
    for directive in ("#PBS -q gpu", "#PBS -A acct", "#PBS -l select=1:ncpus=8:mem=60GB:ngpus=2", "#PBS -l walltime=02:00:00"):
        assert directive in lines, directive
    assert all(line in lines for line in PROLOGUE)
    command = worker_command(script)
    assert option(command, "--nworkers") == "2" and option(command, "--nthreads") == "4"
    assert option(command, "--memory-limit") == "29.80GiB" and option(command, "--resources") == "GPU=1"


def test_lsf_job_script_asks_for_gpus_and_minutes():
    from dask_jobqueue.lsf import lsf_detect_units, lsf_format_bytes_ceil

    config = ClusterConfig(mode="lsf", jobs=jobs(gpus_per_job=2, walltime="01:59:30", job_script_prologue=PROLOGUE))
    lines = job_script(config).splitlines()
    memory = lsf_format_bytes_ceil(parse_bytes("64GiB"), lsf_units=lsf_detect_units())
    for directive in ("#BSUB -q gpu", '#BSUB -P "acct"', "#BSUB -n 8", f"#BSUB -M {memory}", "#BSUB -W 02:00", '#BSUB -gpu "num=2"'):
        assert directive in lines, directive  # 1:59:30 rounds up to two hours: the job is not cut short
    command = worker_command("\n".join(lines))
    assert option(command, "--nworkers") == "2" and option(command, "--resources") == "GPU=1"


def test_a_cpu_job_runs_one_worker_holding_the_encoder_slot():
    script = job_script(ClusterConfig(mode="slurm", jobs=jobs(python="/opt/venv/bin/python", local_directory="/scratch")))
    assert "--gres" not in script
    command = worker_command(script)
    assert command[0] == "/opt/venv/bin/python" and "--nworkers" not in command
    assert option(command, "--nthreads") == "8" and option(command, "--memory-limit") == "64.00GiB"
    assert option(command, "--resources") == "GPU=1" and option(command, "--local-directory") == "/scratch"
    assert "--preload" not in command  # one worker per job: nothing to pin


def test_without_dask_jobqueue_a_batch_mode_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # 'import dask_jobqueue' now raises ImportError
    with pytest.raises(WSIPipelineError, match=r"dask-jobqueue, which is not installed") as caught:
        job_script(ClusterConfig(mode="pbs", jobs=jobs()))
    assert caught.value.fix is not None and "pip install 'wsi-pipeline[hpc]'" in caught.value.fix
    with pytest.raises(WSIPipelineError, match="not installed"), dask_client(ClusterConfig(mode="slurm", jobs=jobs())):
        pass


# -- layout of a batch cluster -------------------------------------------------------------------
def test_the_layout_of_a_batch_cluster_counts_the_slots_of_its_jobs():
    cluster = jobqueue_cluster(ClusterConfig(mode="slurm", jobs=jobs(gpus_per_job=2, n_jobs=4)))
    try:
        with Client(cluster) as client:
            layout = cluster_layout(client)
    finally:
        cluster.close()
    assert layout.description == "slurm: 4 jobs x 2 workers x 4 threads, GPU slots: 8 (2 GPUs per job)"
    assert (layout.gpu_slots, layout.real_gpus, layout.dashboard) == (8, True, None)
    assert layout.encoder_resources == {"GPU": 1} and layout.training_resources("auto") == {"GPU": 1} and layout.warning is None

    cluster = jobqueue_cluster(ClusterConfig(mode="lsf", jobs=jobs(cores=4, adaptive={"maximum_jobs": 3})))
    try:
        with Client(cluster) as client:
            layout = cluster_layout(client)
    finally:
        cluster.close()
    assert layout.description == "lsf: 0-3 jobs (adaptive) x 1 worker x 4 threads, GPU slots: up to 3 (CPU jobs: encoder on CPU)"
    assert (layout.gpu_slots, layout.real_gpus) == (3, False) and layout.training_resources("auto") is None


def test_the_dashboard_link_of_a_batch_cluster_reaches_the_layout(monkeypatch):
    cluster = jobqueue_cluster(ClusterConfig(mode="slurm", dashboard_address=":0", jobs=jobs()))
    try:
        with Client(cluster) as client:
            with monkeypatch.context() as patched:
                patched.setattr(cluster_module.importlib.util, "find_spec", lambda name: object())  # as if bokeh were installed
                dashboard = cluster_layout(client).dashboard
            assert dashboard == client.dashboard_link and dashboard.startswith("http://")
    finally:
        cluster.close()
    cluster = jobqueue_cluster(ClusterConfig(mode="slurm", jobs=jobs()))  # no dashboard_address: none
    try:
        with Client(cluster) as client:
            assert cluster_layout(client).dashboard is None
    finally:
        cluster.close()


# -- submitting through a stand-in sbatch ------------------------------------------------------------
def running_in_group(group: int) -> bool:
    """Whether a live (not zombie) process of this process group exists, read from /proc."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch`` / ``scancel`` on PATH that run the job script in the background and stop it again.

    The job id is the background shell's process id (it leads its own process group), so
    ``scancel`` stops exactly the processes this stand-in started.
    """
    bin_dir, jobs_dir = tmp_path / "bin", tmp_path / "jobs"
    bin_dir.mkdir()
    jobs_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/usr/bin/env bash\n"
        f'if [ -e "{tmp_path}/refuse" ]; then echo "sbatch: error: invalid partition specified: gpu" >&2; exit 1; fi\n'
        f'copy="{jobs_dir}/job-$$.sh"; cp "$1" "$copy"\n'  # dask-jobqueue deletes its file once sbatch returns
        f'setsid bash "$copy" > "{jobs_dir}/job-$$.log" 2>&1 < /dev/null &\n'
        f'echo $! >> "{jobs_dir}/pids"\n'
        'echo "Submitted batch job $!"\n'
    )
    (bin_dir / "scancel").write_text('#!/usr/bin/env bash\nkill -TERM -- "-$1" 2>/dev/null; exit 0\n')
    for name in ("sbatch", "scancel"):
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    yield tmp_path
    pids = (jobs_dir / "pids").read_text().split() if (jobs_dir / "pids").exists() else []
    for pid in pids:  # a test that failed midway may leave its job running
        try:
            os.killpg(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_slurm_job_starts_workers_pinned_to_one_gpu_each(fake_slurm, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")  # what SLURM sets for the job's two GPUs
    config = ClusterConfig(
        mode="slurm",
        jobs=jobs(cores=2, memory="2GB", gpus_per_job=2, n_jobs=1, job_script_prologue=["export WSI_PROLOGUE=ran"]),
    )
    with dask_client(config) as client:
        client.wait_for_workers(2, timeout=120)
        workers = client.scheduler_info()["workers"]
        assert sorted(w["resources"]["GPU"] for w in workers.values()) == [1, 1]
        assert [w["nthreads"] for w in workers.values()] == [1, 1]
        env = client.run(lambda: (os.environ["CUDA_VISIBLE_DEVICES"], os.environ.get("WSI_PROLOGUE")))
        by_name = {str(workers[address]["name"]).rsplit("-", 1)[-1]: value for address, value in env.items()}
        assert by_name == {"0": ("4", "ran"), "1": ("5", "ran")}
        assert cluster_layout(client).description == "slurm: 1 job x 2 workers x 1 thread, GPU slots: 2 (2 GPUs per job)"
        (pid,) = (fake_slurm / "jobs" / "pids").read_text().split()
    # Closing the cluster cancels the job (scancel), which stops its workers.
    for _ in range(300):
        if not running_in_group(int(pid)):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the job's processes (group {pid}) still run after the cluster closed")


def test_a_refused_or_impossible_submission_is_a_clear_error(fake_slurm, monkeypatch):
    (fake_slurm / "refuse").touch()
    refused = "the batch system refused the worker job: sbatch: error: invalid partition specified: gpu"
    with pytest.raises(WSIPipelineError, match=refused), dask_client(ClusterConfig(mode="slurm", jobs=jobs())):
        pass
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(WSIPipelineError, match="'sbatch' is not on PATH"), dask_client(ClusterConfig(mode="slurm", jobs=jobs())):
        pass


# -- --cluster MODE ------------------------------------------------------------------------------------
def test_the_cluster_option_replaces_the_mode(tmp_path):
    slurm = load_run_config(EXAMPLES / "cluster-slurm.yaml")
    local = with_cluster_mode(slurm, "local")
    assert local.manifest.cluster.mode == "local" and local.manifest.cluster.jobs is None and local.scheduler_address is None
    assert local.manifest.cluster.dashboard_address == ":8787"  # what both modes share is kept

    demo = load_run_config(REPO / "data_manifests" / "demo.yaml")
    remote = with_cluster_mode(demo, "address", scheduler="tcp://10.0.0.2:8786")
    assert remote.manifest.cluster.mode == "address" and remote.scheduler_address == "tcp://10.0.0.2:8786"
    with pytest.raises(WSIPipelineError, match="cluster mode 'slurm' does not fit.*needs a 'jobs' section"):
        with_cluster_mode(demo, "slurm")
    with pytest.raises(WSIPipelineError, match="--cluster slurm starts its own"):
        with_cluster_mode(slurm, "slurm", scheduler="tcp://10.0.0.2:8786")


def test_the_cli_passes_the_cluster_option(capsys):
    assert main(["run", str(REPO / "data_manifests" / "demo.yaml"), "--cluster", "pbs", "--dry-run"]) == 2
    assert "cluster mode 'pbs' does not fit" in capsys.readouterr().err
    assert main(["run", str(REPO / "data_manifests" / "demo.yaml"), "--cluster", "yarn", "--dry-run"]) == 2
    assert "unknown cluster mode 'yarn'" in capsys.readouterr().err
