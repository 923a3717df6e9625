"""One interface over submitit's executors: ``slurm``, ``local`` and ``debug``.

``make_executor(cluster, folder, options, binds)`` returns a configured
``submitit.AutoExecutor``:

- ``slurm``: ``sbatch`` jobs (arrays for many calls) with the partition, account, qos,
  time, GPUs, CPUs and memory of :class:`ClusterOptions`, ``--requeue`` so a
  preempted or timed-out job can come back, and USR2 ``signal_delay_s`` before the
  time limit, on which submitit checkpoints a ``Checkpointable`` call and requeues it.
- ``local``: the same pickled calls in processes on this machine (no scheduler).
- ``debug``: in this process, when the result is asked for (pdb works).

With a container image (``options.sif`` or ``$CELLBLOCK_SIF``) the job's Python is
the image's: ``apptainer exec --nv -B <binds> cell.sif python -u -m submitit...``. The
image has no SLURM client: on ``slurm`` submitit's requeue after a checkpoint is relayed
to the sbatch script, which runs ``scontrol requeue`` outside the container
(``cellblock.cluster.requeue``).
Job files (pickles, the sbatch script, stdout/stderr) go to ``folder``; keep one folder
per submission (job ids restart at 1 when a cluster's state is wiped, and submitit
would read a stale result of the same id).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import submitit

from cellblock.cluster.options import CLUSTERS, ClusterOptions
from cellblock.cluster.requeue import relay
from cellblock.container import python_command, resolve_sif
from cellblock.errors import UserError

__all__ = ["make_executor", "sbatch_script"]


def _slurm_parameters(options: ClusterOptions) -> dict[str, Any]:
    extra: dict[str, Any] = {"requeue": True}
    extra.update({k.replace("-", "_"): (v if v != "" else True) for k, v in options.extra.items()})
    return {
        "slurm_partition": options.partition,
        "slurm_account": options.account,
        "slurm_qos": options.qos,
        "slurm_array_parallelism": options.array_parallelism,
        "slurm_signal_delay_s": options.signal_delay_s,
        "slurm_additional_parameters": extra,
        # SLURM sets no thread count: without this, torch in every job of a node starts
        # one thread per core of the node, and jobs sharing the node oversubscribe it.
        "slurm_setup": [f"export OMP_NUM_THREADS={options.cpus}"],
    }


def make_executor(
    cluster: str,
    folder: str | os.PathLike,
    options: ClusterOptions,
    binds: Iterable[str | os.PathLike] = (),
) -> submitit.AutoExecutor:
    """A submitit executor for ``cluster`` writing its job files to ``folder``.

    Args:
        cluster: ``slurm``, ``local`` or ``debug``.
        folder: Job folder (one per submission); bound into the container too.
        options: Resources, placement and container image.
        binds: Host folders the jobs read or write (data, run folders, setup folder);
            bound into the container when there is one.

    Raises:
        UserError: Unknown cluster; ``slurm`` without SLURM here; a container with
            ``debug``; a missing image or container runtime.
    """
    if cluster not in CLUSTERS:
        raise UserError(f"--cluster {cluster!r}: expected one of {', '.join(CLUSTERS)}")
    folder = Path(folder).absolute()
    sif = resolve_sif(options.sif)
    kwargs: dict[str, Any] = {}
    if sif is not None:
        if cluster == "debug":
            raise UserError("--sif needs --cluster slurm or local (debug runs in this process)")
        all_binds = [*binds, folder, *options.binds]
        kwargs[f"{cluster}_python"] = python_command(sif, all_binds)
    try:
        executor = submitit.AutoExecutor(folder, cluster=cluster, **kwargs)
    except RuntimeError as e:  # submitit: 'Could not detect "srun"'
        raise UserError(
            f"--cluster {cluster}: no SLURM on this machine ({e}); start a local one with "
            "scripts/slurm_local.sh start, or use --cluster local"
        ) from None
    params: dict[str, Any] = {
        "timeout_min": options.time_min,
        "name": options.job_name,
        "cpus_per_task": options.cpus,
        "gpus_per_node": options.gpus or None,  # None: no GPU request (not --gpus=0)
        "mem_gb": options.mem_gb,
    }
    if cluster == "slurm":
        params.update(_slurm_parameters(options))
        if sif is not None:
            setup, params["slurm_teardown"] = relay(folder)
            params["slurm_setup"] = [*params["slurm_setup"], *setup]
    executor.update_parameters(**params)
    return executor


def sbatch_script(executor: submitit.AutoExecutor, n_tasks: int = 1) -> str:
    """The sbatch script ``executor`` submits for ``n_tasks`` calls (an array if > 1).

    Rendered by submitit's own function with the executor's parameters, so it is the
    script the cluster gets (the real-cluster test compares the two); used for golden
    files and ``--dry-run``.

    Args:
        executor: A ``slurm`` executor from :func:`make_executor`.
        n_tasks: Number of calls submitted together.
    """
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    inner = executor._executor
    if not isinstance(inner, SlurmExecutor):
        raise UserError("an sbatch script exists only for --cluster slurm")
    params = dict(inner.parameters)
    if n_tasks > 1:
        params["map_count"] = n_tasks
    return _make_sbatch_string(command=inner._submitit_command_str, folder=inner.folder, **params)
