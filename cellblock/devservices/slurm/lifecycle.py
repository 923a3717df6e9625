"""Start, query and stop the single-node cluster of a state folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Any

from cellblock.devservices import process
from cellblock.devservices.files import read_json, write_atomic
from cellblock.devservices.slurm import config, daemons, ports, ready
from cellblock.devservices.slurm.cluster import CLUSTER_NAME, PARTITION, LocalSlurm, SlurmLocalError
from cellblock.devservices.slurm.layout import DAEMONS, Layout

__all__ = ["start", "status", "stop", "stop_orphans"]

log = logging.getLogger(__name__)


def status(state_dir: Path) -> LocalSlurm | None:
    """The cluster running on ``state_dir``, or None if none is (or it does not answer).

    Args:
        state_dir: The cluster's state folder.
    """
    layout = Layout(Path(state_dir).resolve())
    info = read_json(layout.record)
    if info is None:
        return None
    try:
        cluster = LocalSlurm.from_record(layout.state_dir, info)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if not all(daemons.is_ours(cluster.pids.get(d), layout, d) for d in DAEMONS):
        return None
    return cluster if ready.ctld_answers(layout) else None


def _init_database(layout: Layout) -> None:
    """Create MariaDB's data folder on the first start (a few seconds)."""
    if (layout.mysql / "mysql").is_dir():
        return
    t0 = time.monotonic()
    # Into a temp folder, renamed when complete: an interrupted init is redone, not reused.
    tmp = layout.mysql.with_name("mysql.init")
    shutil.rmtree(tmp, ignore_errors=True)
    options = [o.replace(str(layout.mysql), str(tmp)) for o in daemons.mariadb_options(layout)]
    argv = [daemons.binary("mariadb-install-db"), *options,
            "--auth-root-authentication-method=socket", "--skip-test-db"]  # fmt: skip
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=daemons.client_env(layout),
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise SlurmLocalError(f"mariadb-install-db failed in {tmp}:\n{tail}")
    tmp.rename(layout.mysql)
    log.info("initialized the accounting database in %.1f s", time.monotonic() - t0)


def start(
    state_dir: Path,
    timeout: float = 90.0,
    *,
    cpus: int | None = None,
    memory_mb: int | None = None,
) -> LocalSlurm:
    """Start munged, MariaDB, slurmdbd, slurmctld and slurmd on 127.0.0.1; return when ready.

    Ready means: slurmctld answers, the cluster is registered in the accounting
    database (``sacct`` works), and the node is idle. Idempotent: a cluster already
    running on ``state_dir`` is returned as is; leftovers of a crashed one are stopped
    first. Jobs and job ids survive a stop/start on the same folder.

    Args:
        state_dir: State folder (created, mode 0700); see ``cellblock.devservices.slurm.layout``.
        timeout: Seconds to wait for each daemon to be ready.
        cpus: CPUs the node offers (default: the machine's, but at least 4).
        memory_mb: Memory the node offers (default: 90% of the machine's).

    Raises:
        SlurmLocalError: Not root, a program is missing, or a daemon exits or is not
            ready in time (the message ends with the tail of its log).
    """
    layout = Layout(Path(state_dir).resolve())
    running = status(layout.state_dir)
    if running is not None:
        return running
    if os.geteuid() != 0:
        raise SlurmLocalError("the local SLURM cluster runs its daemons as root: run as root")
    for program in ("munge", "mariadb-install-db", "sbatch", *DAEMONS):
        daemons.binary(program)  # all missing programs are reported before anything starts
    stop(layout.state_dir)  # leftovers of a crashed start, if any

    layout.make_dirs()
    config.write_munge_key(layout)
    chosen = ports.choose(layout)
    n_cpus, memory = config.node_resources(cpus, memory_mb)
    config.write_configs(layout, chosen, n_cpus, memory)
    _init_database(layout)

    t0 = time.monotonic()
    pids: dict[str, int] = {}
    try:
        for daemon in DAEMONS:
            proc, offset = daemons.spawn(daemon, layout)
            pids[daemon] = proc.pid
            _save(layout, chosen, n_cpus, memory, pids)  # so stop() finds a half-started one
            check = partial(ready.READY_CHECKS[daemon], layout, chosen)
            process.wait_ready(check, proc, daemon, time.monotonic() + timeout, interval=0.2,
                               log_path=layout.log(daemon), log_offset=offset,
                               error=SlurmLocalError)  # fmt: skip
    except BaseException:
        stop(layout.state_dir)
        raise
    cluster = _save(layout, chosen, n_cpus, memory, pids)
    log.info("local SLURM cluster %r ready in %.1f s (slurmctld on 127.0.0.1:%d, %d CPUs, "
             "%d MB; state in %s)", CLUSTER_NAME, time.monotonic() - t0, chosen["slurmctld"],
             n_cpus, memory, layout.state_dir)  # fmt: skip
    return cluster


def _save(
    layout: Layout, chosen: dict[str, int], cpus: int, memory_mb: int, pids: dict[str, int]
) -> LocalSlurm:
    """Record the cluster (its daemons started so far) in ``cluster.json``; return it."""
    cluster = LocalSlurm(
        state_dir=layout.state_dir,
        slurm_conf=layout.slurm_conf,
        cluster=CLUSTER_NAME,
        partition=PARTITION,
        cpus=cpus,
        memory_mb=memory_mb,
        ports=dict(chosen),
        pids=dict(pids),
    )
    info = {**cluster.record(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_atomic(layout.record, json.dumps(info, indent=2) + "\n")
    return cluster


def _cancel_jobs(layout: Layout, timeout: float) -> None:
    """Cancel every job and wait for them to end, so no job outlives its cluster."""
    listing = ready.run_client(layout, "squeue", "-h", "-o", "%A")
    jobs = sorted(set(listing.stdout.split())) if listing.returncode == 0 else []
    if not jobs:
        return
    ready.run_client(layout, "scancel", *jobs)

    def none_left() -> bool:
        left = ready.run_client(layout, "squeue", "-h", "-o", "%A")
        return left.returncode != 0 or not left.stdout.strip()

    process.wait_until(none_left, timeout, interval=0.3)
    log.info("cancelled %d job(s) of the local cluster", len(jobs))


def stop(state_dir: Path, timeout: float = 15.0) -> bool:
    """Stop the cluster of ``state_dir``: cancel its jobs, then stop its daemons.

    State (jobs, accounting, keys) stays for the next start.

    Args:
        state_dir: The cluster's state folder.
        timeout: Seconds to wait for the jobs to end, and for each daemon after SIGTERM.

    Returns:
        True if any of its daemons was running (and is now stopped), False if none was.
    """
    layout = Layout(Path(state_dir).resolve())
    info = read_json(layout.record) or {}
    recorded: dict[str, Any] = info["pids"] if isinstance(info.get("pids"), dict) else {}
    alive = {d: recorded[d] for d in DAEMONS if daemons.is_ours(recorded.get(d), layout, d)}
    if "slurmctld" in alive and "slurmd" in alive:
        try:
            _cancel_jobs(layout, timeout)
        except (subprocess.SubprocessError, OSError) as e:
            log.warning("could not cancel the jobs of %s: %s", layout.state_dir, e)
    for daemon in reversed(DAEMONS):
        if daemon in alive:
            process.terminate(alive[daemon], daemon, timeout)
    # What is left: a daemon the record lost (crash mid-start), slurmscriptd, slurmstepds.
    leftovers = daemons.our_processes(layout)
    for pid in leftovers:
        process.terminate(pid, f"process {pid}", 5.0)
    layout.record.unlink(missing_ok=True)
    shutil.rmtree(layout.socket_dir, ignore_errors=True)
    if alive:
        log.info("stopped the local SLURM cluster in %s", layout.state_dir)
    return bool(alive or leftovers)


def stop_orphans(timeout: float = 5.0) -> int:
    """Stop the daemons (and job steps) of clusters whose state folder was deleted.

    Returns:
        How many processes were stopped.
    """
    found = daemons.orphans()
    for pid, state_dir in found.items():
        log.info("stopping pid %d of a local cluster whose folder %s is gone", pid, state_dir)
        process.terminate(pid, f"process {pid}", timeout)
    for state_dir in set(found.values()):
        shutil.rmtree(Layout(Path(state_dir)).socket_dir, ignore_errors=True)
    return len(found)
