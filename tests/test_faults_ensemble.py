"""One writer per ensemble output, and finished means finished (issue 29), real processes.

A second ``ensemble.py`` into the same OUT is refused naming the first; a killed or
stopped ensemble leaves a folder every reader refuses (``evaluate.py``,
``make_pseudo_labels.py``, ``benchmark.py``'s loader, the viewer's calls), and its rerun
into the same OUT equals a clean run, without temporary files. A finished folder whose
submission was swapped afterwards is refused as mixed.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cellblock.errors import UserError
from cellblock.finished import RECORD
from cellblock.locks import held_by
from cellblock.profiling.benchmark import load_model
from cellblock.store.packed import PackedDataset
from cellblock.viewer.overlay import load_calls
from tests import test_ensemble_scripts as scripts
from tests.conftest import run_script
from tests.test_ensemble_scripts import ENSEMBLE, EVALUATE, PSEUDO
from tests.test_faults_stages import interrupted_line, wait_for

ensembled = scripts.ensembled  # the fixture: a noisy store and a clean ensemble of it


def _holds(lock: Path, pid: int) -> bool:
    try:
        return json.loads(lock.read_text() or "{}").get("pid") == pid
    except (OSError, ValueError):
        return False


def _start(store: Path, data: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(ENSEMBLE), str(store), "--data", str(data), "--out", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _record(out: Path) -> dict:
    return json.loads((out / RECORD).read_text())


def _temporary(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.slow
def test_second_ensemble_into_one_out_is_refused_naming_the_first(tiny_packed, ensembled, tmp_path):
    store, out = ensembled[0], tmp_path / "out"
    first = _start(store, tiny_packed, out)
    try:
        wait_for(lambda: _holds(out / "ensemble.lock", first.pid), first, "the first's lock")
        first.send_signal(signal.SIGSTOP)  # holds its lock, writes nothing: any machine speed
        before = sorted(p.name for p in out.iterdir())
        second = run_script(ENSEMBLE, store, "--data", tiny_packed, "--out", out, timeout=120)
        assert sorted(p.name for p in out.iterdir()) == before
    finally:
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=300)
    assert second.returncode == 1, second.stderr
    message = second.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: ensemble output {out}: in use by host "), message
    assert f"pid {first.pid}," in message and "ensemble.py" in message, message
    assert "Traceback" not in second.stderr
    assert first.returncode == 0, err[-3000:]
    assert run_script(EVALUATE, out / "submission.csv", "--data", tiny_packed).returncode == 0


def _refused(result: subprocess.CompletedProcess, out: Path, what: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {out}: {what}"), line
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_stopped_ensemble_is_refused_and_its_rerun_equals_a_clean_one(
    tiny_packed, ensembled, tmp_path, sig
):
    store, clean, _ = ensembled
    out = tmp_path / "out"
    proc = _start(store, tiny_packed, out)
    try:
        wait_for(lambda: (out / "submission.csv").is_file(), proc, "submission.csv")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if sig == signal.SIGTERM:
        assert proc.returncode == 143
        assert interrupted_line(err).groups() == ("SIGTERM", "ensemble.py")
        assert _temporary(out) == []  # its own cleanup ran
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (out / RECORD).exists() and held_by(out / "ensemble.lock") is None
    unfinished = f"unfinished ensemble output (no {RECORD}: its run was stopped or failed)"
    _refused(run_script(EVALUATE, out / "submission.csv", "--data", tiny_packed), out, unfinished)
    pseudo = run_script(PSEUDO, out, "--data", tiny_packed, "--out", tmp_path / "p.csv")
    _refused(pseudo, out, unfinished)
    assert not (tmp_path / "p.csv").exists()
    with pytest.raises(UserError, match="unfinished ensemble output"):
        load_model(out, PackedDataset(tiny_packed))
    # a temporary file as a kill -9 inside an atomic write leaves it
    (out / ".report.json.k1ll3d.tmp").write_text("{")
    rerun = run_script(ENSEMBLE, store, "--data", tiny_packed, "--out", out)
    assert rerun.returncode == 0, rerun.stderr
    assert _temporary(out) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in clean.iterdir())
    got, want = _record(out)["files"], _record(clean)["files"]
    assert got.keys() == want.keys() and "submission.csv" in got
    for name in got:
        if name.startswith("report."):  # they name their folder
            text = (clean / name).read_text().replace(str(clean), str(out))
            assert (out / name).read_text() == text, name
        else:
            assert got[name] == want[name], name
    assert run_script(EVALUATE, out / "submission.csv", "--data", tiny_packed).returncode == 0


@pytest.mark.slow
def test_a_finished_folder_with_a_swapped_file_is_refused_as_mixed(
    tiny_packed, ensembled, tmp_path
):
    _, clean, _ = ensembled
    out = shutil.copytree(clean, tmp_path / "out")
    lines = (out / "submission.csv").read_text().splitlines(keepends=True)
    swapped = lines[0] + lines[2] + lines[1] + "".join(lines[3:])  # another run's, say
    (out / "submission.csv").write_text(swapped)
    mixed = "mixed ensemble output: submission.csv is not the file its run wrote"
    _refused(run_script(EVALUATE, out / "submission.csv", "--data", tiny_packed), out, mixed)
    packed = PackedDataset(tiny_packed)
    exp, plate = packed.plate_keys()[0].split("/")
    with pytest.raises(UserError, match=mixed):
        load_calls(out, packed, exp, int(plate.removeprefix("Plate")))
    shutil.copy(clean / "submission.csv", out / "submission.csv")
    assert run_script(EVALUATE, out / "submission.csv", "--data", tiny_packed).returncode == 0
    (out / "wells.parquet").unlink()
    with pytest.raises(UserError, match=r"mixed ensemble output: wells\.parquet is gone"):
        load_model(out, packed)
