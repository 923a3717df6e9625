"""The local SLURM cluster (cellblock.devservices.slurm, scripts/slurm_local.sh), for real.

Uses the session cluster of ``tests/fixtures_slurm.py``; the restart test starts a
second cluster of its own beside it (its own ports and sockets).
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import submitit
from submitit.core.utils import UncompletedJobError

from cellblock.devservices import slurm
from cellblock.devservices.ports import listening_sockets
from cellblock.devservices.slurm import DAEMONS, Layout
from tests.conftest import ROOT


def sacct_states(job_id: str, expect: int, timeout: float = 30.0,
                 env: dict[str, str] | None = None) -> dict[str, str]:  # fmt: skip
    """``{JobID: State}`` of a job's allocations, once sacct lists ``expect`` of them.

    slurmctld sends job records to slurmdbd asynchronously: sacct lags ``sbatch --wait``
    (and a record still queued when slurmctld stopped arrives after its restart).
    """
    deadline = time.monotonic() + timeout
    while True:
        cmd = ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", job_id]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
        states = dict(line.split("|")[:2] for line in out.splitlines() if line)
        final = [s for s in states.values() if s not in ("PENDING", "RUNNING", "REQUEUED")]
        if len(final) >= expect or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def test_cluster_runs_array_jobs_with_accounting(slurm_cluster, tmp_path):
    nodes = subprocess.run(["sinfo", "-h", "-o", "%P %T %D"], capture_output=True, text=True)
    assert nodes.stdout.split() == ["debug*", "idle", "1"]
    result = subprocess.run(
        ["sbatch", "--wait", "--array=0-2", "-o", f"{tmp_path}/%A_%a.out",
         "--wrap", "echo task $SLURM_ARRAY_TASK_ID"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    job = result.stdout.split()[-1]
    assert sacct_states(job, 3) == {f"{job}_{i}": "COMPLETED" for i in range(3)}
    assert sorted(p.read_text() for p in tmp_path.glob("*.out")) == [
        f"task {i}\n" for i in range(3)
    ]


def test_daemons_listen_on_loopback_only(slurm_cluster):
    layout = Layout(slurm_cluster.state_dir)
    seen = {}
    for daemon in ("slurmdbd", "slurmctld", "slurmd"):
        seen.update({port: addr for addr, port in listening_sockets(slurm_cluster.pids[daemon])})
    assert set(slurm_cluster.ports.values()) <= set(seen), seen
    assert set(seen.values()) == {"127.0.0.1"}, seen
    # mariadbd has networking off; munged and mariadbd use sockets in the socket folder.
    assert listening_sockets(slurm_cluster.pids["mariadbd"]) == []
    assert layout.munge_socket.is_socket() and layout.mysql_socket.is_socket()


def test_start_is_idempotent_and_status_reports(slurm_cluster):
    again = slurm.start(slurm_cluster.state_dir)
    assert again.pids == slurm_cluster.pids
    assert slurm.status(slurm_cluster.state_dir) == slurm_cluster
    env = {**os.environ, "SLURMLOCAL_DIR": str(slurm_cluster.state_dir)}
    status = subprocess.run([ROOT / "scripts" / "slurm_local.sh", "status"], env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert status.stdout == f"export SLURM_CONF={slurm_cluster.slurm_conf}\n"
    assert "idle" in status.stderr  # sinfo, for the human


def test_orphans_of_deleted_clusters_are_stopped(tmp_path):
    """A process marked with a state folder that no longer exists (a killed session's)."""
    gone = tmp_path / "deleted-cluster"
    env = {**os.environ, "CELLBLOCK_SLURMLOCAL": str(gone)}
    orphan = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
    kept = subprocess.Popen(["sleep", "300"], env={**env, "CELLBLOCK_SLURMLOCAL": str(tmp_path)})
    try:
        time.sleep(0.2)
        assert slurm.stop_orphans() >= 1
        assert orphan.wait(timeout=10) is not None
        assert kept.poll() is None  # its folder exists: not an orphan
    finally:
        for proc in (orphan, kept):
            proc.kill()
            proc.wait()


def test_status_of_a_folder_without_cluster(tmp_path):
    assert slurm.status(tmp_path) is None
    assert slurm.stop(tmp_path) is False
    env = {**os.environ, "SLURMLOCAL_DIR": str(tmp_path)}
    status = subprocess.run([ROOT / "scripts" / "slurm_local.sh", "status"], env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert status.returncode == 1 and status.stdout == ""
    assert "no local SLURM cluster running" in status.stderr


@pytest.mark.slow
def test_cancelled_job_ends_submitit_waiter(slurm_cluster, tmp_path):
    """With accounting, a job cancelled outside Python raises instead of hanging."""
    import functools

    executor = submitit.AutoExecutor(tmp_path / "jobs", cluster="slurm")
    executor.update_parameters(timeout_min=5)
    job = executor.submit(functools.partial(time.sleep, 300))
    deadline = time.monotonic() + 60
    while job.state != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    subprocess.run(["scancel", job.job_id], check=True)
    t0 = time.monotonic()
    with pytest.raises(UncompletedJobError):
        job.result()
    assert time.monotonic() - t0 < 120
    assert sacct_states(job.job_id, 1)[job.job_id].startswith("CANCELLED")


@pytest.mark.slow
def test_restart_keeps_jobs_and_stop_leaves_nothing(slurm_cluster, tmp_path):
    """A second cluster beside the session's: stop cancels its jobs, a restart keeps ids."""
    state = tmp_path / "cluster"
    first = slurm.start(state)
    assert set(first.ports.values()).isdisjoint(slurm_cluster.ports.values())
    env = {**os.environ, **first.env()}
    submit = ["sbatch", "--parsable", "--wrap", "sleep 300"]
    old_job = subprocess.run(submit, env=env, capture_output=True, text=True, check=True)
    old_id = int(old_job.stdout.strip())
    assert slurm.stop(state) is True
    assert slurm.status(state) is None
    layout = Layout(state.resolve())
    from cellblock.devservices.slurm.daemons import our_processes

    assert our_processes(layout) == [], "processes of the stopped cluster are left"
    assert not layout.socket_dir.exists()
    second = slurm.start(state)
    try:
        assert set(second.pids) == set(DAEMONS) and second.pids != first.pids
        new_job = subprocess.run(submit, env=env, capture_output=True, text=True, check=True)
        assert int(new_job.stdout.strip()) > old_id  # the job id counter survived
        history = sacct_states(str(old_id), 1, env=env)
        assert history.get(str(old_id), "").startswith("CANCELLED"), history
    finally:
        slurm.stop(state)
    assert our_processes(layout) == []
