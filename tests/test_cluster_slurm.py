"""cellblock.cluster on the real local SLURM cluster (tests/fixtures_slurm.py).

Training grids as array jobs, preemption (USR2 -> checkpoint -> requeue -> resume) and
hard requeues ending exactly where an uninterrupted run ends, blocking command jobs
(the daisy worker launcher's building block), jobs cancelled with their driver, jobs
submitted from inside a job, and the container command line as SLURM runs it.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from submitit.core.utils import UncompletedJobError

from cellblock.cluster import (
    ClusterOptions,
    TrainTask,
    cancel_on_exit,
    make_executor,
    outcomes,
    run_blocking,
    sacct_states,
    sbatch_script,
    submit,
    submit_command,
)
from cellblock.cluster.grid import make_grid
from tests.conftest import ROOT, run_script

SETUP = ROOT / "02_train" / "synthetic" / "tiny"
# Tiny and fast: 32 px sites, batch 8, two folds over the fixture's 4 training experiments.
TINY_SETS = ["train.batch_size=8", "net.input_size=32", "data.n_folds=2",
             "train.checkpoint_every=2", "train.log_every=1"]  # fmt: skip

# Long enough that the interruptions below, sent right after checkpoints 2 and 4, arrive
# while the run is still training (~0.1-0.5 s per iteration here).
ITERATIONS = 30

pytestmark = pytest.mark.slow


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def final_states(job_ids: list[str], timeout: float = 60.0) -> dict[str, str]:
    """sacct states once none is pending or running (accounting lags the jobs a little)."""
    states: dict[str, str] = {}

    def settled() -> bool:
        states.update(sacct_states(job_ids))
        return all(states[j] not in ("UNKNOWN", "PENDING", "RUNNING", "REQUEUED")
                   for j in job_ids)  # fmt: skip

    wait_for(settled, timeout, f"final sacct states of {job_ids}", interval=0.5)
    return states


def read_log(path: Path) -> list[dict[str, str]]:
    """log.csv / val.csv rows without the timing column (throughput differs run to run)."""
    with path.open(newline="") as f:
        return [{k: v for k, v in row.items() if k != "img_per_s"} for row in csv.DictReader(f)]


def test_training_array_completes(slurm_cluster, tiny_packed, tmp_path):
    """2 folds x 2 channel sets: one array job; every run checkpointed; sacct COMPLETED."""
    out = tmp_path / "grid"
    sets = [a for s in [*TINY_SETS, "train.workers=0"] for a in ("--set", s)]
    script = ROOT / "scripts" / "submit_train.py"
    result = run_script(script, "--setup", SETUP, "--folds", "0-1", "--channel-sets",
                        "1,2,3,4,5;2,3,4,5,6", "--cluster", "slurm", "--data", tiny_packed,
                        "--out", out, "--iterations", "6", "--time", "30", "--wait", *sets,
                        cwd=tmp_path, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "grid.json").read_text())
    submission = manifest["submissions"][0]
    array = submission["jobs"]["0"].split("_")[0]
    assert submission["jobs"] == {str(i): f"{array}_{i}" for i in range(4)}
    for run in manifest["runs"]:
        run_dir = out / run["run_dir"]
        names = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
        assert names == [f"checkpoint_0000000{i}.pt" for i in (2, 4, 6)], run_dir
        job_id = submission["jobs"][str(run["index"])]
        assert (run_dir / "logs" / f"{job_id}.out").resolve().is_file()  # link to the job's log
        assert "iteration 6 of 6" in (run_dir / "logs" / "train.log").read_text()
    assert set(final_states(list(submission["jobs"].values())).values()) == {"COMPLETED"}
    # What SLURM received is what sbatch_script renders (the golden files' source).
    folder = out / submission["folder"]
    executor = make_executor("slurm", folder, ClusterOptions(time_min=30))
    assert (folder / f"{array}_submission.sh").read_text() == sbatch_script(executor, 4)
    status = run_script(script, "status", "--out", out)
    assert status.returncode == 0, status.stderr
    assert "4 of 4 runs at their target iteration; jobs: 4 COMPLETED" in status.stdout
    assert status.stdout.count(" 6/6 ") == 4
    again = run_script(script, "--setup", SETUP, "--folds", "0-1", "--channel-sets",
                       "1,2,3,4,5;2,3,4,5,6", "--out", out, "--iterations", "6", *sets)  # fmt: skip
    assert again.returncode == 0 and "all 4 runs are at iteration 6" in again.stdout


def test_preempted_and_requeued_training_ends_like_an_uninterrupted_run(
    slurm_cluster, tiny_packed, tmp_path
):
    """Three runs of one spec in one array: uninterrupted, preempted (USR2), requeued (kill).

    USR2 (what SLURM sends before the time limit, or at preemption) makes the training
    checkpoint the iteration it is on and the job requeue itself; ``scontrol requeue``
    ends the job (SIGTERM, SIGKILL 5 s later) and it resumes from its latest checkpoint.
    Neither interrupted attempt leaves a result behind, and both runs end with the
    weights, optimizer state and logs of the uninterrupted run.
    """
    sets = dict(s.split("=") for s in TINY_SETS)
    sets = {k: int(v) for k, v in sets.items()} | {"train.workers": 1}  # a DataLoader worker too
    sets["train.device"] = "cpu"  # bit-exact resumption is a CPU promise (GPU kernels vary)
    names = ("reference", "signal", "requeue")
    specs = []
    for name in names:
        grid = make_grid(
            SETUP,
            folds="0",
            channel_sets="1,2,3,4,5",
            data=tiny_packed,
            out=tmp_path / name,
            iterations=ITERATIONS,
            overrides=sets,
        )
        specs.append(grid.spec(grid.runs()[0]))
    runs = {name: Path(spec.run_dir) for name, spec in zip(names, specs, strict=True)}
    executor = make_executor("slurm", tmp_path / "jobs", ClusterOptions(time_min=60))
    jobs = dict(zip(names, submit(executor, [TrainTask(s) for s in specs]), strict=True))

    ckpt = "checkpoints/checkpoint_{:08d}.pt"
    # A requeued job stays PENDING only ~10 s (cred_expire), so both jobs are watched
    # during every wait: name -> whether its result pickle existed while it was pending.
    pending: dict[str, bool] = {}

    def watch() -> None:
        for name in ("signal", "requeue"):
            if name not in pending and _requeued_and_pending(jobs[name].job_id):
                pending[name] = jobs[name].paths.result_pickle.exists()

    wait_for((runs["signal"] / ckpt.format(2)).exists, 300, "the signal run's checkpoint 2")
    subprocess.run(["scancel", "--signal=USR2", jobs["signal"].job_id], check=True)
    requeue_ckpt = runs["requeue"] / ckpt.format(4)
    wait_for(lambda: watch() or requeue_ckpt.exists(), 300, "the requeue run's checkpoint 4")
    subprocess.run(["scontrol", "requeue", jobs["requeue"].job_id], check=True)
    wait_for(lambda: watch() or len(pending) == 2, 120, "both jobs requeued")
    # The interrupted attempts left no result: a waiter must not take one for the outcome.
    assert pending == {"signal": False, "requeue": False}

    results = outcomes(list(jobs.values()))
    assert all(r.ok for r in results), results
    assert {r.value["iteration"] for r in results} == {ITERATIONS}
    ids = [j.job_id for j in jobs.values()]
    assert set(final_states(ids).values()) == {"COMPLETED"}
    for name in ("signal", "requeue"):
        info = subprocess.run(["scontrol", "show", "job", jobs[name].job_id],
                              capture_output=True, text=True).stdout  # fmt: skip
        assert "Restarts=1" in info, (name, info)

    log = (runs["signal"] / "logs" / "train.log").read_text()
    stopped = re.search(rf"stop requested: checkpointed iteration (\d+) of {ITERATIONS}", log)
    assert stopped and int(stopped.group(1)) >= 2, log[-2000:]
    assert f"resumed from {runs['signal'] / ckpt.format(int(stopped.group(1)))}" in log
    log = (runs["requeue"] / "logs" / "train.log").read_text()
    assert "SIGTERM from the scheduler" in log and "no result written" in log, log[-2000:]
    resumed = re.search(r"resumed from .*checkpoint_(\d+)\.pt", log)
    assert resumed and 4 <= int(resumed.group(1)) < ITERATIONS, log[-2000:]

    def final(name: str) -> dict:
        return torch.load(
            runs[name] / ckpt.format(ITERATIONS), map_location="cpu", weights_only=True
        )

    reference = final("reference")
    for name in ("signal", "requeue"):
        state = final(name)
        for part in ("model", "optimizer"):
            flat_ref, flat = _flatten(reference[part]), _flatten(state[part])
            assert flat_ref.keys() == flat.keys()
            different = [k for k in flat_ref if not _equal(flat_ref[k], flat[k])]
            assert not different, f"{name}: {part} differs at {different[:5]}"
        for table in ("log.csv", "val.csv"):
            assert read_log(runs[name] / table) == read_log(runs["reference"] / table), table


def _requeued_and_pending(job_id: str) -> bool:
    info = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True,
                          text=True).stdout  # fmt: skip
    return "Restarts=1" in info and "JobState=PENDING" in info


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        return {k2: v2 for k, v in obj.items() for k2, v2 in _flatten(v, f"{prefix}{k}.").items()}
    if isinstance(obj, list | tuple):
        return {
            k2: v2 for i, v in enumerate(obj) for k2, v2 in _flatten(v, f"{prefix}{i}.").items()
        }
    return {prefix: obj}


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


def test_command_jobs_block_fail_and_die_with_their_driver(slurm_cluster, tmp_path):
    """The daisy worker launcher's building blocks: blocking jobs and cancel-on-exit."""
    executor = make_executor("slurm", tmp_path / "jobs", ClusterOptions(time_min=10))
    out = tmp_path / "context.txt"
    context = "hostname=127.0.0.1:port=4711:task_id=predict worker_id=0"  # ':' and '=' inside
    write = "import os, sys; open(sys.argv[1], 'w').write(os.environ['DAISY_CONTEXT'])"
    run_blocking(executor, [sys.executable, "-c", write, str(out)], {"DAISY_CONTEXT": context})
    assert out.read_text() == context
    with pytest.raises(UncompletedJobError, match="exited with code 3"):
        run_blocking(executor, [sys.executable, "-c", "raise SystemExit(3)"])

    jobs: list = []
    with pytest.raises(RuntimeError, match="driver failed"), cancel_on_exit(jobs):
        jobs.append(submit_command(executor, ["sleep", "300"]))
        wait_for(lambda: sacct_states([jobs[0].job_id])[jobs[0].job_id] == "RUNNING", 120,
                 "the worker job to run", interval=0.5)  # fmt: skip
        raise RuntimeError("driver failed")
    assert final_states([jobs[0].job_id])[jobs[0].job_id] == "CANCELLED"


def test_jobs_submitted_from_inside_a_job(slurm_cluster, tmp_path):
    """A driver job submits a worker job and waits for it (submit_predict's shape)."""
    driver = (
        "import sys\n"
        "from cellblock.cluster import ClusterOptions, make_executor, run_blocking\n"
        "ex = make_executor('slurm', sys.argv[1], ClusterOptions(time_min=5, mem_gb=0.5))\n"
        "run_blocking(ex, ['sh', '-c', 'echo $SLURM_JOB_ID > ' + sys.argv[2]])\n"
    )
    marker = tmp_path / "worker_job_id"
    executor = make_executor("slurm", tmp_path / "driver", ClusterOptions(time_min=10, cpus=2))
    job = submit_command(executor, [sys.executable, "-c", driver, str(tmp_path / "workers"),
                                    str(marker)])  # fmt: skip
    assert outcomes([job])[0].ok, (tmp_path / "driver" / f"{job.job_id}_0_log.err").read_text()
    worker_id = marker.read_text().strip()
    assert worker_id != job.job_id  # its own job, not a step of the driver's allocation
    assert final_states([job.job_id, worker_id]) == {job.job_id: "COMPLETED",
                                                     worker_id: "COMPLETED"}  # fmt: skip


def test_container_command_as_slurm_runs_it(slurm_cluster, tmp_path, monkeypatch):
    """A stand-in ``apptainer`` checks the command line SLURM runs, then runs it natively."""
    bin_dir, sif = tmp_path / "bin", tmp_path / "cell.sif"
    bin_dir.mkdir()
    sif.write_bytes(b"")
    calls = tmp_path / "apptainer_calls.txt"
    (bin_dir / "apptainer").write_text(f"""#!/bin/sh
# apptainer exec --nv -B BINDS IMAGE python ARGS...: check the shape, then run natively
echo "$@" >> {calls}
[ "$1" = exec ] && [ "$2" = --nv ] && [ "$3" = -B ] && [ -f "$5" ] && [ "$6" = python ] \\
    || {{ echo "bad container command: $*" >&2; exit 97; }}
shift 6
exec {sys.executable} "$@"
""")
    (bin_dir / "apptainer").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")  # the job inherits it
    data = tmp_path / "data"
    executor = make_executor("slurm", tmp_path / "runs" / "jobs",
                             ClusterOptions(time_min=5, sif=str(sif)),
                             binds=[data, tmp_path / "runs"])  # fmt: skip
    job = submit(executor, [functools.partial(pow, 2, 5)])[0]
    assert outcomes([job])[0].value == 32
    expected = (f"exec --nv -B {data},{tmp_path / 'runs'} {sif} python -u -m "
                f"submitit.core._submit {tmp_path / 'runs' / 'jobs'}")  # fmt: skip
    assert calls.read_text().splitlines() == [expected]
