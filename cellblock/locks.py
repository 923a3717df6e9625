"""One writer per folder: an exclusive lock file that names its holder.

A stage that writes a folder (a training run, a packed dataset, a prediction) holds
``FOLDER/<name>.lock`` while it works::

    RUN/train.lock      {"host": "node12", "pid": 4711, "started": "2026-12-01T21:40:02Z",
                         "command": "train.py 3000 --out RUN"}

The lock is a ``flock`` on that file, so the kernel releases it when the process ends,
however it ends (kill -9, node reboot on a local disk, a SLURM requeue): there is
never a stale lock to delete by hand. The file itself stays behind; its content only
means something while somebody holds the lock. A second writer either refuses at once
(``wait_s=0``, what a person at a terminal wants) or waits for the holder to end (a
requeued or resubmitted SLURM task whose previous attempt is still shutting down).

Network file systems: ``flock`` is honoured across nodes on Lustre (mounted with
``flock``), GPFS and NFSv4; on a file system without it, two nodes can both get the
lock. Keep run folders on the cluster's shared parallel file system.

Only the process that takes the lock holds it: a child forked while it is held would
inherit the descriptor, and with it the lock, for as long as the child lives; forked
children let go of it at once (``_let_go_in_child``), and ``cellblock.parallel``
starts its workers with ``spawn``. Should a leftover process hold one anyway (a
program started with the descriptor passed on), the refusal names the processes that
have the file open, not the one that took the lock and has ended (``holder``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from cellblock.errors import UserError

__all__ = ["FolderBusyError", "held_by", "hold", "holder"]

_POLL_S = 0.5


class FolderBusyError(UserError):
    """Another live process holds the folder's lock."""


def holder(lock_file: Path | str) -> str:
    """Who holds (or last held) ``lock_file``, in words: ``host node1, pid 42, since ...``.

    The file names the process that took the lock. When that process has ended on this
    host and the lock is still held, a child of it has inherited the descriptor (an
    orphaned worker): the processes that have the file open are named instead, never
    the one that is gone.
    """
    try:
        info = json.loads(Path(lock_file).read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if info.get("host") == socket.gethostname() and not _alive(info.get("pid")):
        return _openers(Path(lock_file), info)
    if not info:
        return "another process (it has not written its name yet)"
    command = f": {info['command']}" if info.get("command") else ""
    return f"host {info.get('host')}, pid {info.get('pid')}, since {info.get('started')}{command}"


def _alive(pid: object) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as ended)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        with contextlib.suppress(PermissionError):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
        return True  # no /proc (not Linux): it exists
    return state != "Z"


def _openers(lock_file: Path, info: dict) -> str:
    """The processes of this host (that we may look at) with ``lock_file`` open."""
    gone = f"pid {info.get('pid')}, which took it, has ended"
    try:
        target = lock_file.stat()
    except OSError:
        return f"another process ({gone})"
    found = []
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        pid = int(fd.parts[2])
        if pid == os.getpid() or pid in found:
            continue
        with contextlib.suppress(OSError):
            st = fd.stat()
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                found.append(pid)
    if not found:
        # another user's process (its /proc/PID/fd is closed to us), another host, or
        # another PID namespace: say what we know, claim nothing about who
        return f"a process this one cannot see (another user, host or container; {gone} here)"
    names = ", ".join(f"pid {pid} ({_command(pid)})" for pid in sorted(found))
    return f"host {socket.gethostname()}, {names}, left holding it: {gone}"


def _command(pid: int) -> str:
    """``pid``'s command line, shortened; ``?`` if it cannot be read."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(a.decode(errors="replace") for a in argv if a)[:200] or "?"


def held_by(lock_file: Path | str) -> str | None:
    """Who holds ``lock_file`` now (``holder``'s words), or None if nobody does.

    For a reader that must not use a folder while its writer is at work.
    """
    try:
        handle = open(lock_file)  # noqa: SIM115 - closed below, with the flock it takes
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return holder(lock_file)
    return None


# descriptors of the locks this process holds: a forked child lets go of them
_HELD: set[int] = set()


def _let_go_in_child() -> None:
    """In a forked child (a DataLoader worker, say): drop our share of the held locks.

    An flock belongs to the open file, shared by every process with a descriptor on
    it: a child that outlived its parent would keep the folder locked. Pointing the
    child's descriptor at /dev/null drops its share without unlocking the parent's,
    and leaves the number valid for the file object that still owns it.
    """
    if not _HELD:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    for fd in _HELD:
        os.dup2(null, fd, inheritable=False)
    os.close(null)
    _HELD.clear()


os.register_at_fork(after_in_child=_let_go_in_child)


@contextlib.contextmanager
def hold(lock_file: Path | str, *, what: str, wait_s: float = 0.0) -> Iterator[Path]:
    """Hold ``lock_file`` exclusively for the duration of the ``with`` block.

    Args:
        lock_file: The lock file (created with its folder if needed), e.g. ``RUN/train.lock``.
        what: What the folder is, for the error: e.g. ``"run folder RUN"``.
        wait_s: Seconds to wait for a holder to end; 0 = refuse at once.

    Yields:
        ``lock_file``.

    Raises:
        FolderBusyError: Still held by another process after ``wait_s`` seconds; the message
            names the holder.
    """
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    # "a+": never truncate before we hold it (the holder's name is in there)
    with open(lock_file, "a+") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    waited = f" (waited {wait_s:.0f} s)" if wait_s else ""
                    raise FolderBusyError(
                        f"{what}: in use by {holder(lock_file)}{waited}; wait for it to end "
                        "or stop it, or use another folder"
                    ) from None
                time.sleep(_POLL_S)
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500],
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(me) + "\n")
        handle.flush()
        _HELD.add(handle.fileno())
        try:
            yield lock_file
        finally:
            _HELD.discard(handle.fileno())
