#!/usr/bin/env bash
# Start, stop or query the local single-node SLURM cluster (127.0.0.1; munged, MariaDB,
# slurmdbd, slurmctld, slurmd) for development, tests and CI. A thin wrapper around
# `python -m cellblock.devservices.slurm`; `start` first installs the Debian packages it needs
# (scripts/apt_install.sh slurm: quick when they are there). Needs root.
#
#   scripts/slurm_local.sh start|stop|status [--timeout S] [--cpus N] [--memory-mb M]
#   eval "$(scripts/slurm_local.sh start)"     # exports SLURM_CONF for sbatch, sacct, submitit
#
# Environment:
#   PYTHON         interpreter with cellblock installed (default: the project's .venv/bin/python)
#   SLURMLOCAL_DIR state folder: configs, spools, database, logs (default: <project>/.slurmlocal)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
dir="${SLURMLOCAL_DIR:-$root/.slurmlocal}"

if [ $# -lt 1 ]; then
    echo "usage: $0 start|stop|status [--timeout S] [--cpus N] [--memory-mb M]" >&2
    exit 2
fi
if [ "$1" = start ]; then
    # stdout carries only the export lines (for eval): the installer's output goes to stderr.
    "$root/scripts/apt_install.sh" slurm >&2
fi
# PYTHONPATH: the project's package also when the interpreter lacks the editable install.
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m cellblock.devservices.slurm "$@" --dir "$dir"
