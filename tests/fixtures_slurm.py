"""Pytest plugin: one real single-node SLURM cluster (127.0.0.1) per test session.

Register with ``pytest_plugins = ["tests.fixtures_s3", "tests.fixtures_slurm"]`` in
``tests/conftest.py``. The cluster (munged, MariaDB, slurmdbd, slurmctld, slurmd; see
``cellblock.devservices.slurm``) starts on first use, from nothing, in ~10 s; the Debian
packages are installed first if missing (``scripts/apt_install.sh slurm``). Needs root.

Fixtures: ``slurm_cluster`` (session, a running ``LocalSlurm``; while it runs,
``SLURM_CONF`` in ``os.environ`` points sbatch, sacct, scontrol and submitit at it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellblock.devservices import slurm
from cellblock.devservices.slurm import LocalSlurm

__all__ = ["slurm_cluster"]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[LocalSlurm]:
    """A local SLURM cluster for the whole session, stopped at its end (also on failure)."""
    subprocess.run([str(ROOT / "scripts" / "apt_install.sh"), "slurm"], check=True)
    slurm.stop_orphans()  # daemons of a killed earlier session whose folder pytest deleted
    state_dir = tmp_path_factory.mktemp("slurmlocal")
    previous = os.environ.get("SLURM_CONF")
    try:
        cluster = slurm.start(state_dir)
        os.environ["SLURM_CONF"] = str(cluster.slurm_conf)
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        slurm.stop(state_dir)
        # The database is ~60 MB; configs and daemon logs stay for a post-mortem.
        shutil.rmtree(state_dir / "mysql", ignore_errors=True)
