"""Preemption under ``--sif``: the job's requeue, asked for in the image, done outside it.

On USR2 (preemption, or the time limit near) submitit checkpoints a ``Checkpointable``
call and then runs ``scontrol requeue <job>`` from the job's own Python. With ``--sif``
that Python runs in ``cell.sif``, which holds no SLURM client (nor the cluster's
``slurm.conf``, munge socket and the libraries of the cluster's SLURM version, which an
image cannot carry for every cluster), so the requeue would fail and the job end FAILED.

The relay, for ``--cluster slurm`` with an image (:func:`relay`):

1. The job writes ``requeue/<job id>/scontrol`` into its job folder (bound into the
   container), a stand-in put first on the container's ``PATH``
   (``APPTAINERENV_PREPEND_PATH``, and the ``SINGULARITYENV_`` one for Singularity).
   It does one thing, ``scontrol requeue JOB``: it writes the job id to
   ``$CELLBLOCK_REQUEUE_FILE`` and exits 0; anything else fails naming what it is.
   submitit then exits the job step as after its own requeue, without a result (a
   waiting ``job.result()`` keeps waiting).
2. The sbatch script runs on the host, outside the container, where SLURM's own
   ``scontrol`` is: after ``srun`` returns, its teardown requeues the job that was
   asked for, with the cluster's real client and credentials, and otherwise ends with
   the step's exit status.

So the decision stays submitit's (checkpointed, not timed out too often), and the
requeue is the one a native job does: same command, same job id, no SLURM installation
bound into the image. A job killed outside Python (``scontrol requeue`` by an admin,
preemption with ``PreemptMode=REQUEUE``) is requeued by SLURM itself, as natively.
"""

from __future__ import annotations

import shlex
from pathlib import Path

__all__ = ["FILE_ENV", "RELAY_DIR", "relay"]

#: The folder, under a submission's job folder, holding the stand-in and the requests.
RELAY_DIR = "requeue"
#: Where the stand-in writes the job id to requeue (set per job by the sbatch script).
FILE_ENV = "CELLBLOCK_REQUEUE_FILE"

_STANDIN = r"""#!/bin/sh
# cellblock.cluster.requeue: scontrol inside cell.sif, which has no SLURM client.
# `scontrol requeue JOB` (what submitit runs after a checkpoint) is recorded in
# $CELLBLOCK_REQUEUE_FILE; the job's sbatch script, outside the container, then runs
# the real `scontrol requeue JOB`. Nothing else is relayed.
if [ "$#" -eq 2 ] && [ "$1" = requeue ] && [ -n "${CELLBLOCK_REQUEUE_FILE:-}" ]; then
    case "$2" in
        ""|*[!0-9_]*) ;;
        *) printf '%s\n' "$2" > "$CELLBLOCK_REQUEUE_FILE.tmp" &&
            mv "$CELLBLOCK_REQUEUE_FILE.tmp" "$CELLBLOCK_REQUEUE_FILE" && exit 0 ;;
    esac
fi
echo "scontrol $*: SLURM's client is outside the container; cellblock relays only" \
    "'scontrol requeue JOBID' (see cellblock.cluster.requeue)" >&2
exit 1
"""


def relay(folder: Path) -> tuple[list[str], list[str]]:
    """The sbatch script's lines that relay the requeue: its setup and its teardown.

    The stand-in is written by the job itself, into ``folder/requeue/<job id>/`` (one
    folder per array task: they start together), so the sbatch script holds all of it.

    Args:
        folder: The submission's job folder, bound into the container at the same path.

    Returns:
        Lines for submitit's ``slurm_setup`` (before ``srun``: the stand-in, the request
        file, the container's ``PATH``) and ``slurm_teardown`` (after it: the requeue).
    """
    where = shlex.quote(str(Path(folder).absolute() / RELAY_DIR)) + '/"$SLURM_JOB_ID"'
    setup = [
        "# --sif: the image has no SLURM client; submitit's `scontrol requeue` there is",
        "# recorded by this stand-in, and the teardown below requeues (cellblock.cluster.requeue)",
        f"cellblock_relay={where}",
        'mkdir -p "$cellblock_relay" && rm -f "$cellblock_relay/request"',
        "cat > \"$cellblock_relay/scontrol\" <<'CELLBLOCK_SCONTROL'",
        *_STANDIN.splitlines(),
        "CELLBLOCK_SCONTROL",
        'chmod +x "$cellblock_relay/scontrol"',
        f'export {FILE_ENV}="$cellblock_relay/request"',
        'export APPTAINERENV_PREPEND_PATH="$cellblock_relay"',
        'export SINGULARITYENV_PREPEND_PATH="$cellblock_relay"',
    ]
    teardown = [
        "cellblock_status=$?",
        f'if [ -s "${FILE_ENV}" ]; then',
        f'    cellblock_job="$(cat "${FILE_ENV}")"',
        f'    rm -f "${FILE_ENV}"',
        '    echo "requeueing job $cellblock_job (asked for in the container)" >&2',
        '    scontrol requeue "$cellblock_job" || exit 1',
        "fi",
        'exit "$cellblock_status"',
    ]
    return setup, teardown
