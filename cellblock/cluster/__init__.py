"""Cluster jobs: submitit executors (slurm, local, debug) behind one interface.

- ``options``: :class:`ClusterOptions` (partition, account, qos, time, gpus, cpus, mem,
  array parallelism, extra ``#SBATCH`` flags, container) and the shared command-line
  options of every launcher script.
- ``executor``: :func:`make_executor` (a configured ``submitit.AutoExecutor``; the job's
  Python runs in the container when there is an image), :func:`sbatch_script`.
- The container (``--sif`` / ``$CELLBLOCK_SIF``; :func:`wrap` a command line as
  ``apptainer|singularity exec --nv -B <binds> cell.sif ...``) is ``cellblock.container``,
  below this package: the blockwise launchers wrap commands too, without submitit.
- ``jobs``: submit calls (arrays on SLURM), run commands as blocking jobs (``sbatch
  --wait`` semantics, for daisy worker launchers), cancel jobs when their driver ends,
  job outcomes, ``sacct`` states.
- ``train_task``: :class:`TrainTask`, ``train.py`` as a preemption-safe call
  (checkpoint on USR2, requeue, resume from the last checkpoint).
- ``requeue``: that requeue under ``--sif``, where the image has no SLURM client: asked
  for inside the image, done by the sbatch script outside it.
- ``grid`` / ``grid_axes`` / ``grid_jobs``: folds x channel subsets of a setup as one array job, and
  the grid's state (``scripts/submit_train.py``).
- ``launcher``: :class:`SlurmLauncher`, ``predict_blockwise.py --cluster slurm`` (each
  daisy worker a job of its own, cancelled with its driver); imported by the blockwise
  launcher registry, not here, so this package loads without the prediction code.
- ``smoke``: ``python -m cellblock.cluster.smoke``, the container's ``%test``.

Job files go to a folder per submission; a run's logs are linked into its run folder.
"""

from cellblock.cluster.executor import make_executor, sbatch_script
from cellblock.cluster.grid import TrainGrid
from cellblock.cluster.grid_axes import parse_channel_sets, parse_folds
from cellblock.cluster.grid_jobs import format_status, grid_status, submit_grid
from cellblock.cluster.jobs import (
    Outcome,
    RunCommand,
    cancel_on_exit,
    outcomes,
    run_blocking,
    run_throttled,
    sacct_states,
    submit,
    submit_command,
)
from cellblock.cluster.options import CLUSTERS, ClusterOptions, add_arguments, from_args
from cellblock.cluster.train_task import TrainSpec, TrainTask

__all__ = [
    "CLUSTERS",
    "ClusterOptions",
    "Outcome",
    "RunCommand",
    "TrainGrid",
    "TrainSpec",
    "TrainTask",
    "add_arguments",
    "cancel_on_exit",
    "format_status",
    "from_args",
    "grid_status",
    "make_executor",
    "outcomes",
    "parse_channel_sets",
    "parse_folds",
    "run_blocking",
    "run_throttled",
    "sacct_states",
    "sbatch_script",
    "submit",
    "submit_command",
    "submit_grid",
]
