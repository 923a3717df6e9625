"""A single-node SLURM cluster on 127.0.0.1 for development, tests and CI.

Five daemons started directly (no systemd), as root, each bound to loopback and
talking through this cluster's own sockets and key: ``munged`` (authentication),
``mariadbd`` (the accounting database), ``slurmdbd`` (accounting, so ``sacct`` works
and submitit notices a cancelled job instead of waiting forever), ``slurmctld`` and
``slurmd`` (one node, ``localhost``, one partition, ``debug``). Configs are generated
from templates at every start (``config``); everything lives in one state folder
(``layout`` describes it). A start from nothing takes ~15 s, most of it creating the
database; a restart on the same folder keeps the jobs and the job id counter.

Clients find the cluster through ``SLURM_CONF``::

    eval "$(scripts/slurm_local.sh start)"     # or: python -m cellblock.devservices.slurm start
    sbatch --wrap 'hostname'; sacct
    scripts/slurm_local.sh stop

Modules: ``lifecycle`` (start, status, stop), ``cluster`` (``LocalSlurm``, the error),
``layout`` (the state folder), ``config`` (slurm.conf, slurmdbd.conf, MUNGE key),
``ports`` (the three TCP ports), ``daemons`` (command lines, environment, identity),
``ready`` (readiness checks, client calls), ``cli`` (the command line); launch,
termination, the readiness poll and the choice of ports are the shared
``devservices.process`` and ``devservices.ports``.
"""

from cellblock.devservices.slurm.cli import main
from cellblock.devservices.slurm.cluster import CLUSTER_NAME, PARTITION, LocalSlurm, SlurmLocalError
from cellblock.devservices.slurm.layout import DAEMONS, Layout
from cellblock.devservices.slurm.lifecycle import start, status, stop, stop_orphans
from cellblock.devservices.slurm.ready import run_client

__all__ = [
    "CLUSTER_NAME",
    "DAEMONS",
    "PARTITION",
    "Layout",
    "LocalSlurm",
    "SlurmLocalError",
    "main",
    "run_client",
    "start",
    "status",
    "stop",
    "stop_orphans",
]
