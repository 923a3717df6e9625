"""The five daemons: their command lines, environment, launch and identity.

Daemons are started directly (no systemd: PID 1 here is not systemd, and apt's
policy-rc.d keeps packages from starting services), each in the foreground of its own
session so that a Ctrl-C in the starting shell does not reach them, with its output
appended to ``log/NAME.log`` (``devservices.process`` launches and stops them). Every
daemon carries ``CELLBLOCK_SLURMLOCAL=<state dir>`` in its environment, and so do the
processes it forks (slurmscriptd, slurmstepd): that marker tells our processes apart
from another cluster's, and guards against pid reuse.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from cellblock.devservices import process
from cellblock.devservices.slurm.cluster import SlurmLocalError
from cellblock.devservices.slurm.layout import Layout

__all__ = [
    "MARKER",
    "binary",
    "client_env",
    "command",
    "is_ours",
    "orphans",
    "our_processes",
    "spawn",
]

MARKER = "CELLBLOCK_SLURMLOCAL"

# Environment that would point the daemons elsewhere: a shell inside a SLURM job has
# SLURM_JOB_ID & co., one that eval'ed another cluster's exports has SLURM_CONF.
_SCRUBBED_PREFIXES = ("SLURM_", "MYSQL_", "MUNGE_", "SBATCH_", "SRUN_", "SALLOC_")
_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def binary(name: str) -> str:
    """Path of a SLURM/MUNGE/MariaDB program: on PATH, else in the sbin folders.

    Raises:
        SlurmLocalError: It is not installed (naming the script that installs it).
    """
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))
    if found is None:
        raise SlurmLocalError(
            f"{name} not found: install the cluster's Debian packages with "
            "scripts/apt_install.sh slurm (slurm-wlm munge slurmdbd mariadb-server)"
        )
    return found


def client_env(layout: Layout) -> dict[str, str]:
    """The environment of the daemons, and of our own client calls (sinfo, scontrol).

    Args:
        layout: The cluster's paths.
    """
    return process.scrubbed_env(
        _SCRUBBED_PREFIXES,
        {
            "SLURM_CONF": str(layout.slurm_conf),
            # slurmdbd connects with libmariadb's default socket, which honours this one.
            "MYSQL_UNIX_PORT": str(layout.mysql_socket),
            MARKER: str(layout.state_dir),
        },
    )


def command(daemon: str, layout: Layout) -> list[str]:
    """The foreground command line of ``daemon`` (one of ``layout.DAEMONS``)."""
    if daemon == "munged":
        return [
            binary("munged"),
            "--foreground",
            f"--socket={layout.munge_socket}",
            f"--key-file={layout.munge_key}",
            f"--pid-file={layout.pid_file('munged')}",
            f"--seed-file={layout.run_dir / 'munged.seed'}",
            f"--log-file={layout.log('munged')}",
        ]
    if daemon == "mariadbd":
        return [binary("mariadbd"), *mariadb_options(layout), "--skip-networking",
                f"--socket={layout.mysql_socket}", f"--pid-file={layout.pid_file('mariadbd')}",
                f"--log-error={layout.log('mariadbd')}"]  # fmt: skip
    if daemon == "slurmdbd":
        return [binary("slurmdbd"), "-D"]  # reads slurmdbd.conf beside SLURM_CONF
    if daemon == "slurmctld":
        return [binary("slurmctld"), "-D", "-f", str(layout.slurm_conf)]
    if daemon == "slurmd":
        # The machine's hostname is not "localhost", the node's name in slurm.conf.
        return [binary("slurmd"), "-D", "-N", "localhost", "-f", str(layout.slurm_conf)]
    raise ValueError(f"unknown daemon {daemon!r}")


def mariadb_options(layout: Layout) -> list[str]:
    """Server options shared by ``mariadb-install-db`` and ``mariadbd``: small and private."""
    return [
        "--no-defaults",  # not /etc/mysql/my.cnf: its socket and datadir are the system's
        "--user=root",  # mysql could not enter a 0700 state folder
        f"--datadir={layout.mysql}",
        "--innodb-buffer-pool-size=32M",
        "--innodb-log-file-size=16M",  # default 96 MB, for a database of a few hundred kB
        "--innodb-lock-wait-timeout=900",  # slurmdbd's recommendation
    ]


def spawn(daemon: str, layout: Layout) -> tuple[subprocess.Popen, int]:
    """Start ``daemon`` with its output appended to its log.

    Args:
        daemon: One of ``layout.DAEMONS``.
        layout: The cluster's paths.

    Returns:
        The process, and the byte offset in its log where this start's output begins.
    """
    banner = f"cellblock.devservices.slurm: starting {daemon}"
    cmd, env = command(daemon, layout), client_env(layout)
    return process.spawn(cmd, layout.log(daemon), banner, cwd=layout.state_dir, env=env)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def is_ours(pid: object, layout: Layout, daemon: str | None = None) -> bool:
    """True if ``pid`` is a live process of this cluster (optionally: running ``daemon``).

    Args:
        pid: A recorded pid; anything but a positive int is no process.
        layout: The cluster's paths.
        daemon: Program name the process must run (its ``argv[0]`` basename).
    """
    if not isinstance(pid, int) or pid <= 0 or not process.pid_alive(pid):
        return False
    try:
        if _environ(pid).get(MARKER) != str(layout.state_dir):
            return False
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return daemon is None or Path(argv0).name == daemon


def _marked() -> dict[int, str]:
    """Live processes carrying a local cluster's marker: ``{pid: its state folder}``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                state_dir = _environ(int(entry.name)).get(MARKER)
                if state_dir and process.pid_alive(int(entry.name)):
                    found[int(entry.name)] = state_dir
    return found


def our_processes(layout: Layout) -> list[int]:
    """Every live process carrying this cluster's marker (daemons, scriptd, stepds).

    Args:
        layout: The cluster's paths.
    """
    return sorted(pid for pid, marker in _marked().items() if marker == str(layout.state_dir))


def orphans() -> dict[int, str]:
    """Processes of local clusters whose state folder is gone: ``{pid: state folder}``.

    What a killed test session leaves behind once pytest deletes its old temp folders.
    """
    return {pid: folder for pid, folder in _marked().items() if not Path(folder).is_dir()}
