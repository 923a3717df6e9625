"""Faults of a long run around packing, locks and stops (issue 29), with real processes.

A pack killed (``kill -9``) or stopped (SIGTERM) mid-run leaves no worker behind and
no lock held: the rerun starts at once and ends with the bytes of an uninterrupted
pack. SIGTERM prints the one ``interrupted:`` line and exits 143. A lock whose taker
has ended but whose descriptor an orphan inherited names the orphan, never the dead.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cellblock.errors import UserError
from cellblock.finished import RECORD, output_folder, require_finished
from cellblock.locks import FolderBusyError, held_by, hold
from cellblock.store.packplates import is_complete
from tests.conftest import ROOT
from tests.test_disk_full import assert_same_store

PACK = ROOT / "01_data" / "pack_zarr.py"
INTERRUPTED = re.compile(
    r"^interrupted: (SIG[A-Z]+) to ([\w.]+); finished work is kept; "
    r"run the same command again to resume$"
)


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, pending = set(), [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.add(child)
            pending.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (zombies count as ended)."""
    left = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.add(pid)
    return left


def wait_for(condition, proc: subprocess.Popen | None, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None:
            assert proc.poll() is None, f"{what}: the process ended ({proc.returncode})"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def interrupted_line(stderr: str) -> re.Match:
    """The last line of ``stderr``, matched against the one ``interrupted:`` line."""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    match = INTERRUPTED.match(last)
    assert match, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    return match


def _complete_plates(images: Path) -> int:
    if not images.is_dir():
        return 0
    return sum(
        is_complete(images, f"{exp.name}/{plate.name}", "directory")
        for exp in images.iterdir()
        if exp.is_dir()
        for plate in exp.iterdir()
        if plate.is_dir()
    )


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_stopped_pack_leaves_no_process_and_reruns_at_once(tiny_raw, tiny_packed, tmp_path, sig):
    out = tmp_path / "dataset"
    cmd = [sys.executable, str(PACK), "--raw", str(tiny_raw), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[int] = set()
    try:

        def started() -> bool:
            seen.update(descendants(proc.pid))
            return _complete_plates(out / "images.zarr") >= 1

        wait_for(started, proc, "a complete plate")
        assert seen, "no worker processes seen"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the workers went with their parent, however it ended
    wait_for(lambda: not alive(seen), None, "the workers to end", timeout=15)
    assert held_by(out / "pack.lock") is None
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
        assert interrupted_line(err).groups() == ("SIGTERM", "pack_zarr.py")
    else:
        assert proc.returncode == -signal.SIGKILL
    done = _complete_plates(out / "images.zarr")
    assert 1 <= done < 32, "stopped too late to test a resume"
    start = time.monotonic()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"skipping {done} complete plate(s)" in rerun.stderr, rerun.stderr[-3000:]
    assert time.monotonic() - start < 240
    assert_same_store(out, tiny_packed)


def _orphan_script(lock: Path, child_pid: Path, how: str) -> str:
    """Python that takes ``lock``, starts a child (``how``), writes its pid and dies."""
    start = {
        # a forked child: it must let go of the lock at once
        "fork": "pid = os.fork()\n    if pid == 0:\n        time.sleep(120)\n        os._exit(0)\n",
        # a program given the lock's descriptor: it keeps the lock after we die
        "passed": "import subprocess\n"
        "    from cellblock.locks import _HELD\n"
        "    pid = subprocess.Popen(['sleep', '120'], pass_fds=list(_HELD)).pid\n",
    }[how]
    return (
        "import os, sys, time\n"
        "from cellblock.locks import hold\n"
        f"with hold({str(lock)!r}, what='x'):\n"
        f"    {start}"
        f"    open({str(child_pid)!r}, 'w').write(str(pid))\n"
        "    os._exit(0)\n"
    )


def test_a_forked_child_never_holds_its_parents_lock(tmp_path):
    lock, child_pid = tmp_path / "pack.lock", tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", _orphan_script(lock, child_pid, "fork")])
    assert parent.wait(timeout=60) == 0
    child = int(child_pid.read_text())
    try:
        assert alive({child})  # the orphan lives on, and yet:
        assert held_by(lock) is None
        with hold(lock, what="x"):
            pass
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_lock_left_to_an_orphan_names_the_orphan_not_its_dead_parent(tmp_path):
    """The flock is the open file's: a descriptor passed on keeps it after its taker."""
    lock, child_pid = tmp_path / "pack.lock", tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", _orphan_script(lock, child_pid, "passed")])
    assert parent.wait(timeout=60) == 0
    child = int(child_pid.read_text())
    try:
        with pytest.raises(FolderBusyError) as e, hold(lock, what=f"dataset folder {tmp_path}"):
            pass
        message = str(e.value)
        assert message.startswith(f"dataset folder {tmp_path}: in use by host "), message
        assert f"pid {child} (sleep 120)" in message, message
        assert f"pid {parent.pid}, which took it, has ended" in message, message
        assert f"pid {parent.pid}, since" not in message
        assert held_by(lock) is not None
    finally:
        os.kill(child, signal.SIGKILL)
    wait_for(lambda: not alive({child}), None, "the child to end", timeout=15)
    assert held_by(lock) is None
    with hold(lock, what="x"):  # free again, at once; a reader sees the live writer
        assert f"pid {os.getpid()}," in (held_by(lock) or "")


_SLEEPER = (
    "import signal, sys, time\n"
    "from cellblock.cli import run\n"
    "def main():\n"
    "    try:\n"
    "        print('ready', flush=True)\n"
    "        time.sleep(60)\n"
    "    finally:\n"
    "        print('cleaned up', flush=True)\n"
    "if sys.argv[1] == 'ignore-hup':\n"
    "    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what nohup does\n"
    "run(main)\n"
)


@pytest.mark.parametrize(
    ("sig", "status"),
    [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)],
    ids=["sigterm", "sigint", "sighup"],
)
def test_each_stop_signal_runs_the_cleanup_and_prints_one_line(tmp_path, sig, status):
    script = tmp_path / "stage.py"
    script.write_text(_SLEEPER)
    cmd = [sys.executable, str(script), "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == status, err
    assert out.strip() == "cleaned up"  # the stage's finally ran
    assert interrupted_line(err).groups() == (signal.Signals(sig).name, "stage.py")


_SUBMITTER = (
    "import time\n"
    "from cellblock.cli import run\n"
    "from cellblock.cluster.jobs import cancel_on_exit\n"
    "class Job:\n"
    "    job_id = '7'\n"
    "    def done(self):\n"
    "        return False\n"
    "    def cancel(self, check):\n"
    "        print('cancelled 7', flush=True)\n"
    "def main():\n"
    "    with cancel_on_exit([Job()]):\n"
    "        print('ready', flush=True)\n"
    "        time.sleep(60)\n"
    "run(main)\n"
)


def test_a_stopped_submitter_cancels_its_jobs_and_prints_one_line(tmp_path):
    """cancel_on_exit (submit_train.py --wait, submit_predict.py) leaves SIGTERM to ``run``:
    its jobs are cancelled and the stage says it was interrupted."""
    script = tmp_path / "submit.py"
    script.write_text(_SUBMITTER)
    cmd = [sys.executable, str(script)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert out.strip() == "cancelled 7"
    assert interrupted_line(err).groups() == ("SIGTERM", "submit.py")


def test_a_signal_ignored_at_start_stays_ignored(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(_SLEEPER)
    cmd = [sys.executable, str(script), "ignore-hup"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None, "SIGHUP under nohup stopped the stage"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143
    assert interrupted_line(err).groups() == ("SIGTERM", "stage.py")


def test_output_folder_clears_records_last_and_readers_check_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.csv").write_text("old")
    (out / "b.png").write_text("old plot this run will not draw")
    (out / "notes.txt").write_text("the user's")
    (out / ".a.csv.x1y2.tmp").write_text("half")
    assert require_finished(out, "ensemble") is None  # neither lock nor record: as before
    with pytest.raises(RuntimeError), output_folder(out, "ensemble", ["a.csv", "b.png"]):
        assert sorted(p.name for p in out.iterdir()) == ["ensemble.lock", "notes.txt"]
        with pytest.raises(UserError, match=r"still being written by host .*pid \d+"):
            require_finished(out, "ensemble")
        (out / "a.csv").write_text("new")
        raise RuntimeError("the run fails")
    assert not (out / RECORD).exists()
    with pytest.raises(UserError, match=f"^{out}: unfinished ensemble output"):
        require_finished(out, "ensemble")
    with output_folder(out, "ensemble", ["a.csv", "b.png"]):
        (out / "a.csv").write_text("new")
    record = require_finished(out, "ensemble")
    assert record is not None and list(record["files"]) == ["a.csv"]
    assert require_finished(out, "benchmark") is None  # not a benchmark folder
    (out / "a.csv").write_text("edited")
    with pytest.raises(UserError, match=r"mixed ensemble output: a\.csv is not the file"):
        require_finished(out, "ensemble")
