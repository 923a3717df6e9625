"""Faults around training and packing: two writers on one folder, broken checkpoints.

One writer per folder (``RUN/train.lock``, ``DATASET/pack.lock``): a second ``train.py``
or ``pack_zarr.py`` is refused at once naming the holder; a SLURM ``TrainTask`` waits
for it a while (a requeued attempt overlapping the previous one's end). A checkpoint
that cannot be read (full disk, power loss) is set aside on resume and the run goes on
from the one before, reproducing the uninterrupted curve; prediction refuses it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from cellblock.cli import parse_overrides
from cellblock.cluster import train_task
from cellblock.cluster.train_task import TrainSpec, TrainTask
from cellblock.errors import UserError
from cellblock.inference import Predictor
from cellblock.locks import FolderBusyError, hold
from cellblock.remote.checksums import sidecar_path
from cellblock.runs import load_run_info, run_checkpoint
from cellblock.training import checkpoint as ckpt
from cellblock.training.cli import run_lock, train_main
from cellblock.training.logs import CsvLog
from cellblock.training.setupconfig import load_setup_config
from tests.conftest import ROOT, run_script
from tests.test_training import FAST, SETUP, args

CKPT = "checkpoints/checkpoint_{:08d}.pt"


@pytest.fixture(scope="module")
def run12(tiny_packed, tmp_path_factory) -> Path:
    """An uninterrupted 12-iteration run, checkpoints at 3, 6, 9, 12 (the reference)."""
    out = tmp_path_factory.mktemp("faults_run12") / "run"
    assert train_main(SETUP, args(12, tiny_packed, out)) == 0
    return out


def _copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"{what}: the process ended ({proc.returncode})"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def _holds(lock: Path, pid: int) -> bool:
    try:
        return json.loads(lock.read_text() or "{}").get("pid") == pid
    except (OSError, ValueError):
        return False


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}  # fmt: skip


def _same_curve(a: Path, b: Path) -> None:
    for table in ("log.csv", "val.csv"):
        ta, tb = pd.read_csv(a / table), pd.read_csv(b / table)
        assert list(ta["iteration"]) == list(tb["iteration"]), table
        assert list(ta["loss"]) == list(tb["loss"]), table


# -- one writer per run folder ----------------------------------------------------------


@pytest.mark.slow
def test_second_train_py_on_a_run_folder_is_refused_at_once(run12, tiny_packed, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, str(SETUP / "train.py"), *args(12, tiny_packed, run)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _holds(run / "train.lock", first.pid), first, "lock held by the first")
        # Stopped, the first keeps its lock and writes nothing: the second meets a live
        # holder whatever the machine's speed, and must leave the folder as it is.
        first.send_signal(signal.SIGSTOP)
        before = _listing(run)
        start = time.monotonic()
        second = run_script(SETUP / "train.py", *args(12, tiny_packed, run), timeout=120)
        took = time.monotonic() - start
        assert _listing(run) == before
    finally:
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=300)
    assert second.returncode == 1, second.stderr
    message = second.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: run folder {run}: in use by host "), message
    assert f"pid {first.pid}," in message and "train.py 12" in message
    assert "waited" not in message and "Traceback" not in second.stderr
    assert took < 60, f"the refusal took {took:.0f} s"
    assert first.returncode == 0, err[-3000:]
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == [
        Path(CKPT.format(i)).name + ext for i in (3, 6, 9, 12) for ext in ("", ".sha256")
    ]
    for i in (3, 6, 9, 12):
        assert ckpt.load_checkpoint(run / CKPT.format(i))["iteration"] == i
    assert list(pd.read_csv(run / "log.csv")["iteration"]) == list(range(1, 13))
    _same_curve(run, run12)


def test_only_rank_0_takes_the_run_lock(tmp_path, monkeypatch):
    run = tmp_path / "run"
    with hold(run / "train.lock", what="test"):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "1")
        with run_lock(run):  # rank 1 would wait for its own rank 0 forever: it does not lock
            pass
        monkeypatch.setenv("RANK", "0")
        busy = rf"run folder {re.escape(str(run))}: in use by"
        with pytest.raises(FolderBusyError, match=busy), run_lock(run):
            pass


def _spec(data: Path, run: Path, iterations: int) -> TrainSpec:
    return TrainSpec(str(SETUP), str(data), str(run), iterations, parse_overrides(FAST))


def test_train_task_waits_for_the_lock_then_gives_up(tiny_packed, tmp_path, monkeypatch, caplog):
    run = tmp_path / "run"
    lock = run / "train.lock"
    monkeypatch.setattr(train_task, "_LOCK_WAIT_S", 0.6)
    with hold(lock, what="test"):
        start = time.monotonic()
        with pytest.raises(FolderBusyError, match=rf"pid {os.getpid()},.*\(waited 1 s\)") as e:
            TrainTask(_spec(tiny_packed, run, 2))()
        assert time.monotonic() - start >= 0.5
    assert f"run folder {run}" in str(e.value)
    assert sorted(p.name for p in run.iterdir()) == ["train.lock"]  # nothing beside the holder

    # a holder that ends within the wait (a dying previous attempt): the task proceeds
    monkeypatch.setattr(train_task, "_LOCK_WAIT_S", 60.0)
    held = threading.Event()

    def previous_attempt() -> None:
        with hold(lock, what="test"):
            held.set()
            time.sleep(2.0)

    thread = threading.Thread(target=previous_attempt)
    thread.start()
    assert held.wait(10)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="cellblock.training.cli"):
        result = TrainTask(_spec(tiny_packed, run, 2))()
    waited = time.monotonic() - start
    thread.join()
    assert waited >= 1.5 and result["iteration"] == 2 and result["run_dir"] == str(run)
    assert f"pid {os.getpid()}" in caplog.text and "waiting up to 60 s" in caplog.text
    assert ckpt.latest_checkpoint(run).name == "checkpoint_00000002.pt"
    assert (run / "logs" / "train.log").is_file()


# -- one writer per dataset folder ------------------------------------------------------


@pytest.mark.slow
def test_second_packer_is_refused_then_a_pack_completes(tiny_raw, tmp_path):
    out = tmp_path / "dataset"
    cmd = [ROOT / "01_data/pack_zarr.py", "--raw", tiny_raw, "--out", out,
           "--experiments", "HEPG2-01"]  # fmt: skip
    with hold(out / "pack.lock", what="test"):
        refused = run_script(*cmd, timeout=120)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    message = refused.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: dataset folder {out}: in use by host "), message
    assert f"pid {os.getpid()}," in message and "Traceback" not in refused.stderr
    assert sorted(p.name for p in out.iterdir()) == ["pack.lock"]
    done = run_script(*cmd, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "packed 4 plate(s)" in done.stdout
    assert (out / "metadata.parquet").is_file()


# -- unreadable checkpoints -------------------------------------------------------------


@pytest.mark.slow
def test_truncated_latest_checkpoint_is_set_aside_and_the_run_resumes(
    run12, tiny_packed, tmp_path, caplog
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _copy_run(run12, tmp_path / "run")
    latest = run / CKPT.format(12)
    _truncate(latest)
    half = latest.read_bytes()
    aside = latest.with_name(latest.name + ".corrupt")
    aside.write_bytes(b"an older corrupt file of the same name")
    with caplog.at_level(logging.INFO):
        assert train_main(SETUP, args(12, tiny_packed, run)) == 0
    assert aside.read_bytes() == half  # replaced by the newly set-aside file
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{latest}: not a readable checkpoint" in m and latest.name + ".corrupt" in m
               for m in warned), warned  # fmt: skip
    assert f"resumed from {run / CKPT.format(9)}" in caplog.text
    _same_curve(run, run12)
    a, b = ckpt.load_checkpoint(latest), ckpt.load_checkpoint(run12 / CKPT.format(12))
    for key, value in b["model"].items():
        assert torch.equal(a["model"][key], value), key
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()  # the rerun's events after 9 replace the first run's
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == list(range(1, 13))
    log = pd.read_csv(run12 / "log.csv")
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(list(log["loss"]))


def test_garbage_checkpoints_are_set_aside_and_training_starts_afresh(
    run12, tiny_packed, tmp_path, caplog
):
    run = tmp_path / "run"
    bad = {3: b"not a checkpoint", 6: b"\0" * 4096}  # not a zip; zeros after a power loss
    for i, content in bad.items():
        (run / CKPT.format(i)).parent.mkdir(parents=True, exist_ok=True)
        (run / CKPT.format(i)).write_bytes(content)
    torch.save({"weights": torch.zeros(2)}, run / CKPT.format(9))  # readable, not ours
    with caplog.at_level(logging.WARNING):
        assert train_main(SETUP, args(3, tiny_packed, run)) == 0
    for i in (6, 9):  # newer than the new checkpoint 3: set aside, never loaded again
        assert (run / (CKPT.format(i) + ".corrupt")).is_file()
        assert f"{run / CKPT.format(i)}: not a" in caplog.text
    assert (run / (CKPT.format(3) + ".corrupt")).read_bytes() == bad[3]
    assert "not a cellblock checkpoint (need keys model, iteration, config)" in caplog.text
    assert "no intact checkpoint left: training from scratch" in caplog.text
    assert [p.name for p in ckpt.checkpoints(run)] == ["checkpoint_00000003.pt"]
    reference = pd.read_csv(run12 / "log.csv").head(3)
    assert list(pd.read_csv(run / "log.csv")["loss"]) == list(reference["loss"])


def test_incompatible_checkpoint_is_still_refused_and_kept(run12, tiny_packed, tmp_path):
    run = _copy_run(run12, tmp_path / "run")
    _truncate(run / CKPT.format(12))  # set aside; checkpoint 9 is readable but for 69 classes
    with pytest.raises(UserError, match="made for 69 classes, this run has 30") as e:
        train_main(SETUP, args(20, tiny_packed, run, "--set", "net.num_classes=30"))
    assert not isinstance(e.value, ckpt.UnreadableCheckpointError)
    assert str(run / CKPT.format(9)) in str(e.value)
    assert (run / CKPT.format(9)).is_file() and not (run / (CKPT.format(9) + ".corrupt")).exists()


def test_other_ranks_skip_unreadable_checkpoints_without_renaming(run12, tmp_path, monkeypatch):
    run = _copy_run(run12, tmp_path / "run")
    _truncate(run / CKPT.format(12))
    resolved = load_setup_config(SETUP, parse_overrides(FAST))
    path, state = ckpt.resume_point(run, resolved, rename=False)
    assert path == run / CKPT.format(9) and state["iteration"] == 9
    assert (run / CKPT.format(12)).is_file()  # rank 0 renames, not this rank
    # rank 0 renamed checkpoint 12 away between this rank's listing and its load
    listed = ckpt.checkpoints(run)
    (run / CKPT.format(12)).unlink()
    monkeypatch.setattr(ckpt, "checkpoints", lambda run_dir: listed)
    assert ckpt.resume_point(run, resolved, rename=False)[0] == run / CKPT.format(9)


def test_prediction_refuses_an_unreadable_checkpoint(run12, tmp_path):
    run = _copy_run(run12, tmp_path / "run")
    latest = run / CKPT.format(12)
    _truncate(latest)
    assert run_checkpoint(run) == latest
    pattern = re.escape(f"{latest}: not a readable checkpoint")
    with pytest.raises(ckpt.UnreadableCheckpointError, match=pattern):
        load_run_info(run_checkpoint(run))
    with pytest.raises(UserError, match=pattern):
        Predictor(latest, None)  # fails on the file, before touching the dataset
    assert latest.is_file()  # prediction never renames a run's files


def test_resume_drops_log_rows_after_the_checkpoint_and_a_partial_line(tmp_path):
    path = tmp_path / "log.csv"
    # rows 1-4, then the first bytes of row 12 (a power loss in the middle of a write)
    path.write_text("iteration,loss\n1,0.5\n2,0.4\n3,0.3\n4,0.2\n1")
    CsvLog(path, resume_from=3).write({"iteration": 4, "loss": 0.25})
    assert path.read_text() == "iteration,loss\n1,0.5\n2,0.4\n3,0.3\n4,0.25\n"


_FULL_DISK = """
import errno, resource, signal, sys, torch
from cellblock.training.setupconfig import SetupConfig, load_setup_config
from cellblock.data.augment import BatchAugment
from cellblock.nets.models import build_net
from cellblock.training.checkpoint import code_version, save_checkpoint
cfg = SetupConfig.from_resolved(load_setup_config(sys.argv[1], {"net.input_size": 32}))
net = build_net(cfg.net)
opt = torch.optim.SGD(net.parameters(), lr=0.1)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)
code_version()  # runs git: before the limit
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
try:
    save_checkpoint(sys.argv[2], iteration=1, model=net, optimizer=opt, scheduler=sched,
                    augment=BatchAugment(cfg.data.augment), config={})
except OSError as e:
    print("OSError", errno.errorcode[e.errno], type(e).__name__)
"""


def test_a_write_that_fails_is_a_plain_oserror_and_leaves_nothing(tmp_path):
    # A file-size limit stands in for a full disk: both fail the write with an errno.
    r = run_script("-c", _FULL_DISK, SETUP, tmp_path / "run", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["OSError", "EFBIG", "OSError"], r.stdout + r.stderr
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []  # no temp file, no target


def test_flipped_bit_in_a_checkpoint_is_caught_by_its_sidecar(run12, tiny_packed, tmp_path):
    """torch.load reads a flipped weight silently; the .sha256 sidecar does not."""
    run = _copy_run(run12, tmp_path / "run")
    latest = run / CKPT.format(12)
    assert sidecar_path(latest).read_text().endswith(f"  {latest.name}\n")
    data = bytearray(latest.read_bytes())
    data[len(data) // 2] ^= 0x01
    latest.write_bytes(bytes(data))
    with pytest.raises(UserError, match=rf"{re.escape(str(latest))}: .*differ from .*\.sha256"):
        Predictor(latest, None)  # prediction refuses it, naming the file
    assert train_main(SETUP, args(12, tiny_packed, run)) == 0  # resumes from 9
    assert (run / (CKPT.format(12) + ".corrupt")).read_bytes() == bytes(data)
    _same_curve(run, run12)
    assert ckpt.load_checkpoint(latest)["iteration"] == 12  # rewritten, with a new sidecar
