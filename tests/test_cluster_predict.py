"""Blockwise prediction with SLURM worker jobs on the real local cluster (fixtures_slurm).

``--cluster slurm``: every daisy worker is a SLURM job of its own; the output equals a
local run's; a scancelled worker job is replaced and the run completes identically;
``scripts/submit_predict.py`` runs the driver itself as a job; no worker job outlives
its driver.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import daisy.v2 as daisy
import pytest

from cellblock.blockwise.launcher import WorkerSpec, launcher_class
from cellblock.cluster.launcher import SlurmLauncher, cluster_options
from cellblock.errors import UserError
from cellblock.training.cli import train_main
from tests.conftest import ROOT
from tests.test_blockwise import (
    _assert_identical,
    _assert_workers_served,
    _blockwise_args,
    _counts,
    _lines,
    _load,
    _run,
    _start,
    _wait_for,
)
from tests.test_cluster_slurm import final_states
from tests.test_inference import SETUP, TRAIN

SUBMIT = ROOT / "scripts" / "submit_predict.py"
JOB = re.compile(r"SLURM job (\d+)")


@pytest.fixture(scope="module")
def trained(tiny_packed, tmp_path_factory) -> Path:
    """A run trained by plate: SLURM workers must share each plate's BatchNorm statistics
    (PRED/bnstats) as local ones do, and give the same answer."""
    run = tmp_path_factory.mktemp("by_plate") / "run"
    sets = [a for s in [*TRAIN, "data.batch_by=plate"] for a in ("--set", s)]
    assert train_main(SETUP, ["20", "--data", str(tiny_packed), "--out", str(run), *sets]) == 0
    return run


@pytest.fixture(scope="module")
def local_out(trained, tiny_packed, tmp_path_factory) -> Path:
    """The reference: the same run with two local workers."""
    out = tmp_path_factory.mktemp("local") / "pred"
    r = _run(_blockwise_args(trained, tiny_packed, out))
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def _worker_jobs(out: Path) -> list[str]:
    """Ids of the worker jobs of ``out``'s run, from the headers of the worker logs."""
    return [j for p in sorted((out / "logs").glob("worker_*.log"))
            for j in JOB.findall(p.read_text())]  # fmt: skip


def _queued(job_ids: list[str]) -> list[str]:
    """Those of ``job_ids`` that squeue still lists (pending, running, completing)."""
    r = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True)
    return sorted(set(r.stdout.split()) & set(job_ids))


def _slurm(*extra: str) -> list[str]:
    return ["--cluster", "slurm", "--cluster-option", "time=20", "--cluster-option", "mem=1G",
            *extra]  # fmt: skip


@pytest.mark.slow
def test_slurm_workers_equal_a_local_run(slurm_cluster, local_out, trained, tiny_packed,
                                         tmp_path):  # fmt: skip
    out = tmp_path / "pred"
    r = _run(_blockwise_args(trained, tiny_packed, out, *_slurm()), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    blocks, completed, *_ = _counts(r.stdout)
    assert completed == blocks and "0 restart(s)" in r.stdout
    _assert_identical(_load(out), _load(local_out))
    assert sorted(p.name for p in out.glob("bnstats/*/*.pt")) == sorted(
        p.name for p in local_out.glob("bnstats/*/*.pt")
    )
    jobs = _worker_jobs(out)
    assert len(jobs) == 2 and len(set(jobs)) == 2, jobs  # one job per worker
    # every node is this machine: the server stays on loopback, and the workers reached it
    _assert_workers_served(out, completed)
    _wait_for(lambda: not _queued(jobs), 30, "the worker jobs to leave the queue")
    assert set(final_states(jobs).values()) == {"COMPLETED"}
    scripts = list((out / "logs" / "slurm").glob("*/*_submission.sh"))
    assert len(scripts) == 2
    sbatch = scripts[0].read_text()
    assert "#SBATCH --time=20" in sbatch and "#SBATCH --mem=1GB" in sbatch
    assert "--requeue" not in sbatch  # daisy replaces a lost worker; SLURM must not


@pytest.mark.slow
def test_scancelled_worker_job_run_completes_identically(slurm_cluster, local_out, trained,
                                                        tiny_packed, tmp_path):  # fmt: skip
    out = tmp_path / "pred"
    # sleep=S reaches the worker jobs through sbatch's --export=ALL; 2 s per block leaves
    # the survivor a minute of work, longer than the lost job takes to be noticed (sacct)
    proc = _start(_blockwise_args(trained, tiny_packed, out, *_slurm()),
                  tmp_path / "driver.log", "sleep=2")  # fmt: skip
    try:
        _wait_for(lambda: _lines(out) >= 2 and len(_worker_jobs(out)) == 2, 240, "two workers")
        victim = _worker_jobs(out)[0]
        subprocess.run(["scancel", victim], check=True)
        assert proc.wait(timeout=400) == 0, (tmp_path / "driver.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stdout = (tmp_path / "driver.log").read_text()
    blocks, completed, *_ = _counts(stdout)
    assert completed == blocks and "1 restart(s)" in stdout
    # daisy's record of the lost worker names its job, how it ended, and its log
    assert re.search(
        rf"worker \d \(SLURM job {victim}\) exited with signal SIGTERM; log: "
        r".*worker_\d\.log; job state CANCELLED",
        stdout,
    ), stdout[-3000:]
    _assert_identical(_load(out), _load(local_out))
    jobs = _worker_jobs(out)
    assert len(jobs) == 3 and victim in jobs, jobs  # the replacement is a new job
    _wait_for(lambda: not _queued(jobs), 30, "the worker jobs to leave the queue")
    states = final_states(jobs)
    assert states.pop(victim) == "CANCELLED" and set(states.values()) == {"COMPLETED"}


@pytest.mark.slow
def test_submit_predict_waits_for_the_driver_job(slurm_cluster, local_out, trained, tiny_packed,
                                                 tmp_path):  # fmt: skip
    out = tmp_path / "pred"
    predict = _blockwise_args(trained, tiny_packed, out, *_slurm())[1:]
    r = subprocess.run([sys.executable, str(SUBMIT), "--time", "30", "--mem", "1G", "--wait",
                        "--", *predict], capture_output=True, text=True, timeout=600,
                       cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    driver = re.search(r"submitted the driver as job (\d+)", r.stdout).group(1)
    log = Path(re.search(r"log: (\S+)", r.stdout).group(1))
    assert log.parent.parent == out / "logs" / "driver"
    assert "sites: 84 in" in log.read_text()  # the driver's summary
    _assert_identical(_load(out), _load(local_out))
    workers = _worker_jobs(out)
    assert len(workers) == 2 and driver not in workers  # jobs of their own, not steps
    _wait_for(lambda: not _queued([driver, *workers]), 30, "the jobs to leave the queue")
    assert set(final_states([driver, *workers]).values()) == {"COMPLETED"}


def test_cluster_options_and_bad_input(tmp_path):
    """--cluster-option parsing (pure logic; the real-cluster tests above run the same path)."""
    opts = cluster_options({"partition": "gpu", "time": "1-00:00:00", "mem": "16G", "cpus": 4,
                            "gpus": 1, "constraint": "a100", "exclusive": None})  # fmt: skip
    assert (opts.partition, opts.time_min, opts.mem_gb, opts.cpus, opts.gpus) == \
        ("gpu", 1440, 16.0, 4, 1)  # fmt: skip
    assert opts.extra == {"constraint": "a100", "exclusive": ""}
    assert cluster_options({}).time_min == 60 and cluster_options({}).mem_gb is None
    with pytest.raises(UserError, match="--time 'soon'"):
        cluster_options({"time": "soon"})
    with pytest.raises(UserError, match="cpus/gpus"):
        cluster_options({"cpus": "many"})
    assert launcher_class("slurm") is SlurmLauncher
    spec = WorkerSpec((sys.executable, "-m", "cellblock.blockwise.worker", "--plan", "p.json"),
                      str(tmp_path), ("0",), {"EXTRA": "1"})  # fmt: skip
    launcher = SlurmLauncher(spec, partition="debug", cpus=2)
    assert launcher.command() == list(spec.argv) and launcher.cluster.cpus == 2
    context = daisy.Context(hostname="10.0.0.5", port=7, task_id="predict", worker_id=3)
    env = launcher.job_env(context, tmp_path / "worker_3.log")
    assert env["DAISY_CONTEXT"] == context.to_env() and env["EXTRA"] == "1"
    assert env["CELLBLOCK_WORKER_LOG"] == str(tmp_path / "worker_3.log")
    # no GPU asked for: the driver's mask (exported by sbatch) must not put it on the driver's
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    gpu_job = SlurmLauncher(spec, partition="debug", gpus=1)
    assert "CUDA_VISIBLE_DEVICES" not in gpu_job.job_env(context, tmp_path / "w.log")  # SLURM's
    assert not list(tmp_path.iterdir())  # checking the options wrote nothing


@pytest.mark.slow
def test_worker_jobs_are_cancelled_when_the_driver_is_killed(slurm_cluster, trained, tiny_packed,
                                                             tmp_path):  # fmt: skip
    """SIGKILL leaves the driver no cleanup: its launcher processes cancel their jobs."""
    out = tmp_path / "pred"
    # 10 min per block: no worker can finish a block, see the server gone and exit by
    # itself before its launcher cancels it (the job would end COMPLETED, not CANCELLED)
    proc = _start(_blockwise_args(trained, tiny_packed, out, *_slurm()),
                  tmp_path / "driver.log", "sleep=600")  # fmt: skip
    try:
        _wait_for(lambda: len(_worker_jobs(out)) == 2 and
                  all("device" in p.read_text() for p in (out / "logs").glob("worker_*.log")),
                  240, "two running workers")  # fmt: skip
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the driver only; its children see it go
        proc.wait()
    jobs = _worker_jobs(out)
    _wait_for(lambda: not _queued(jobs), 30, "the worker jobs to leave the queue")
    assert set(final_states(jobs).values()) == {"CANCELLED"}
    text = (out / "logs" / "daisy").rglob("worker_*.err")
    assert any("is gone: cancelling this worker's job" in p.read_text() for p in text)
