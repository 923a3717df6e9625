"""Where a local cluster keeps its files: configs, spools, database, logs, sockets, records.

State folder (``--dir``, default ``<project>/.slurmlocal``)::

    etc/slurm.conf        generated at each start (clients find it through SLURM_CONF)
    etc/slurmdbd.conf     generated at each start, mode 0600 (slurmdbd refuses others)
    etc/munge.key         generated once, mode 0400: this cluster's own MUNGE key
    spool/slurmctld/      slurmctld's StateSaveLocation: jobs survive a stop/start, and
                          job ids keep counting up (a wiped state restarts them at 1)
    spool/slurmd/         slurmd's spool
    mysql/                MariaDB's data folder (the accounting database, for sacct)
    log/                  one log per daemon (NAME.log), appended at each start
    run/                  pid and seed files
    cluster.json          what the running cluster is (pids, ports), removed by stop
    ports.json            the ports of the last start, reused when free

The UNIX sockets (MUNGE, MariaDB) live in ``/tmp/cellblock-slurm-<hash>/`` rather than
in the state folder: munged refuses a socket unless every folder above it is
world-searchable (a pytest tmp folder is 0700), and a socket path has at most 107 bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DAEMONS", "Layout"]

# Start order; stop goes the other way. Each needs the ones before it.
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")


@dataclass(frozen=True)
class Layout:
    """The paths of one cluster, all derived from its state folder.

    Attributes:
        state_dir: The state folder (absolute).
    """

    state_dir: Path

    @property
    def etc(self) -> Path:
        return self.state_dir / "etc"

    @property
    def slurm_conf(self) -> Path:
        return self.etc / "slurm.conf"

    @property
    def slurmdbd_conf(self) -> Path:
        # slurmdbd has no option for its config: it reads slurmdbd.conf beside SLURM_CONF.
        return self.etc / "slurmdbd.conf"

    @property
    def munge_key(self) -> Path:
        return self.etc / "munge.key"

    @property
    def spool_ctld(self) -> Path:
        return self.state_dir / "spool" / "slurmctld"

    @property
    def spool_slurmd(self) -> Path:
        return self.state_dir / "spool" / "slurmd"

    @property
    def mysql(self) -> Path:
        return self.state_dir / "mysql"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def record(self) -> Path:
        return self.state_dir / "cluster.json"

    @property
    def ports_file(self) -> Path:
        return self.state_dir / "ports.json"

    @property
    def socket_dir(self) -> Path:
        # Fixed /tmp, not $TMPDIR: that may be a private 0700 folder (see the module doc).
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        return Path("/tmp") / f"cellblock-slurm-{digest}"

    @property
    def munge_socket(self) -> Path:
        return self.socket_dir / "munge.socket"

    @property
    def mysql_socket(self) -> Path:
        return self.socket_dir / "mysqld.sock"

    def log(self, daemon: str) -> Path:
        """The log file of ``daemon`` (one of ``DAEMONS``)."""
        return self.log_dir / f"{daemon}.log"

    def pid_file(self, daemon: str) -> Path:
        """The pid file ``daemon`` writes itself (informational; cluster.json is the truth)."""
        return self.run_dir / f"{daemon}.pid"

    def make_dirs(self) -> None:
        """Create the folders: private ones 0700, the socket folder 0755 (munged needs it)."""
        for folder in (self.state_dir, self.etc, self.spool_ctld, self.spool_slurmd,
                       self.log_dir, self.run_dir):  # fmt: skip
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.socket_dir.mkdir(exist_ok=True)
        self.socket_dir.chmod(0o755)
