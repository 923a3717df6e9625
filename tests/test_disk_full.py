"""A full disk, and other OS errors, reach the user as one line; a rerun with space resumes.

The end-to-end test packs onto a real 8 MB tmpfs (root: ``mount -t tmpfs``), so the
"No space left on device" comes from the kernel, in a pack worker process; the unit
tests drive ``cellblock.cli.run`` in this process.
"""

from __future__ import annotations

import errno
import filecmp
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch.utils.data

from cellblock.cli import EXIT_ERROR, run, writing
from cellblock.errors import CorruptDataError, UserError
from cellblock.parallel import ordered_map
from cellblock.store.pack import pack_dataset
from cellblock.store.packed import PackedDataset
from cellblock.synth import preset, write_dataset
from tests.conftest import ROOT, run_script

# One experiment (4 plates) of 6 x 256 x 256 sites: 11.3 MB packed, about 2.8 MB a
# plate, so an 8 MB file system takes two plates and fails in the third.
BIG = preset("demo").replace(
    n_treatments=16, n_positive_controls=2, experiments_per_cell_type=1, image_size=256
)
SMALL_MB, ENOUGH_MB = 8, 32


# ---------------------------------------------------------------- end to end: pack


@contextmanager
def tmpfs(folder: Path, size_mb: int) -> Iterator[Path]:
    """Mount a ``size_mb`` tmpfs on ``folder`` for the block; skip if mounting is refused.

    Args:
        folder: The mount point (created).
        size_mb: Its size in MB.
    """
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                              str(folder)], capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def remount(folder: Path, size_mb: int) -> None:
    """Grow the tmpfs on ``folder`` to ``size_mb`` (its files stay).

    Args:
        folder: A tmpfs mount point.
        size_mb: The new size in MB.
    """
    subprocess.run(["mount", "-o", f"remount,size={size_mb}m", str(folder)], check=True)


@pytest.fixture(scope="module")
def big_raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("big") / "raw"
    write_dataset(BIG, out, experiments=["HEPG2-01"], workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def reference(big_raw, tmp_path_factory) -> Path:
    """The same raw tree packed on the normal disk, uninterrupted."""
    out = tmp_path_factory.mktemp("big_ref") / "dataset"
    pack_dataset(big_raw, out, workers=2, progress=False)
    return out


def pack(raw: Path, out: Path) -> subprocess.CompletedProcess:
    """``pack_zarr.py --raw RAW --out OUT --workers 2`` (workers: the error crosses a process)."""
    return run_script(ROOT / "01_data/pack_zarr.py", "--raw", raw, "--out", out, "--workers", "2")


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def assert_same_store(got: Path, ref: Path) -> None:
    """Every file under images.zarr (chunks, shard indexes, zarr.json) byte-identical.

    (zarr.json holds geometry, plate statistics and the complete flag: no timings.)
    """
    assert files(got / "images.zarr") == files(ref / "images.zarr")
    _, mismatch, errors = filecmp.cmpfiles(
        got / "images.zarr", ref / "images.zarr", sorted(files(ref / "images.zarr")), shallow=False
    )
    assert not mismatch and not errors, (mismatch, errors)
    assert pd.read_parquet(got / "metadata.parquet").equals(
        pd.read_parquet(ref / "metadata.parquet")
    )


def assert_nothing_claimed_beyond_what_fit(out: Path, ref: Path) -> int:
    """Plates marked complete are whole and right; nothing else claims to be done.

    Returns the number of complete plates.
    """
    assert not (out / "metadata.parquet").exists(), "metadata.parquet is written last"
    root = out / "images.zarr"
    complete = [
        m.parent for m in root.glob("*/Plate*/zarr.json") if '"complete": true' in m.read_text()
    ]
    for plate in complete:
        rel = plate.relative_to(root)
        assert files(plate) == files(ref / "images.zarr" / rel), rel
        _, mismatch, _ = filecmp.cmpfiles(plate, ref / "images.zarr" / rel, files(plate),
                                          shallow=False)  # fmt: skip
        assert not mismatch, (rel, mismatch)
    assert not list(root.rglob("*.partial")) and not list(out.rglob(".*.tmp")), "temp files left"
    return len(complete)


@pytest.mark.slow
def test_pack_onto_a_full_disk_says_where_in_one_line_and_a_rerun_resumes(
    big_raw, reference, tmp_path
):
    with tmpfs(tmp_path / "small", SMALL_MB) as small:
        out = small / "ds"
        full = pack(big_raw, out)
        assert full.returncode == EXIT_ERROR, full.stdout + full.stderr
        assert "Traceback" not in full.stderr
        assert full.stderr.count("\n") == 1 and full.stderr.startswith("error: "), full.stderr
        assert f"{out}: no space left on device (" in full.stderr, full.stderr
        n_complete = assert_nothing_claimed_beyond_what_fit(out, reference)
        assert 0 < n_complete < 4, "8 MB holds some plates of 11 MB, not all"

        # Rerun with space, elsewhere: the partial folder copied to the normal disk.
        moved = tmp_path / "moved"
        shutil.copytree(out, moved)
        done = pack(big_raw, moved)
        assert done.returncode == 0, done.stderr
        assert f"({n_complete} already complete" in done.stdout, done.stdout
        assert_same_store(moved, reference)

        # Rerun with space, in place: the same file system, grown.
        remount(small, ENOUGH_MB)
        done = pack(big_raw, out)
        assert done.returncode == 0, done.stderr
        assert f"({n_complete} already complete" in done.stdout, done.stdout
        assert_same_store(out, reference)
        assert PackedDataset(out).read_site("HEPG2-01", 4, 1, 1, 1).shape == (6, 256, 256)


# ---------------------------------------------------------------- run(): one line


def exit_of(main, capsys) -> tuple[int, str]:
    """Run ``main`` through ``run``; return its exit status and stderr."""
    with pytest.raises(SystemExit) as stopped:
        run(main)
    return stopped.value.code, capsys.readouterr().err


def raiser(error: BaseException, where: str | None = None):
    """A ``main`` that raises ``error`` (inside ``writing(where)`` when given)."""

    def main():
        with writing(where):
            raise error

    return main


ENOSPC_HINT = "(free space on that file system or choose another folder, then rerun"


def test_os_error_naming_a_file_is_one_line_with_its_path(capsys):
    code, err = exit_of(raiser(OSError(errno.ENOSPC, "No space left on device", "/d/x")), capsys)
    assert code == EXIT_ERROR == 1
    assert err.startswith("error: /d/x: no space left on device " + ENOSPC_HINT), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_os_error_without_a_file_is_given_the_folder_being_written(capsys):
    code, err = exit_of(raiser(OSError(errno.ENOSPC, "No space left"), "/data/ds"), capsys)
    assert code == 1 and err.startswith("error: /data/ds: no space left on device ("), err
    code, err = exit_of(raiser(OSError(errno.EDQUOT, "Disk quota exceeded"), "/q"), capsys)
    assert code == 1 and err.startswith("error: /q: disk quota exceeded (free space within"), err


def test_os_error_without_a_file_outside_writing_still_one_line(capsys):
    code, err = exit_of(raiser(OSError(errno.ENOSPC, "No space left on device")), capsys)
    assert code == 1 and err.startswith("error: no space left on device ("), err
    assert err.count("\n") == 1


def test_writing_keeps_the_errors_own_path_and_leaves_network_errors_unnamed(capsys):
    own = PermissionError(errno.EACCES, "Permission denied", "/runs/a/ckpt.pt")
    code, err = exit_of(raiser(own, "/runs/a"), capsys)
    assert code == 1 and err == (
        "error: /runs/a/ckpt.pt: permission denied "
        "(check its owner and permissions with ls -ld, or choose another folder)\n"
    )
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    code, err = exit_of(raiser(refused, "/out"), capsys)
    assert code == 1 and "/out" not in err, err
    assert err.startswith("error: connection refused (ConnectionRefusedError; CELLBLOCK_TRACEBACK")


def test_both_paths_of_a_failed_rename(capsys):
    error = OSError(errno.EXDEV, "Invalid cross-device link", "/a/tmp", None, "/b/final")
    code, err = exit_of(raiser(error), capsys)
    assert code == 1 and err == "error: /a/tmp -> /b/final: invalid cross-device link\n"


def test_read_only_file_system(capsys):
    code, err = exit_of(raiser(OSError(errno.EROFS, "Read-only file system"), "/mnt/ro"), capsys)
    assert code == 1, code
    assert err.startswith("error: /mnt/ro: read-only file system (that file system is mounted"), err


def test_traceback_on_request(capsys, monkeypatch):
    monkeypatch.setenv("CELLBLOCK_TRACEBACK", "1")
    code, err = exit_of(raiser(OSError(errno.ENOSPC, "No space"), "/data/ds"), capsys)
    assert code == 1 and err.startswith("Traceback (most recent call last):"), err
    assert err.splitlines()[-1].startswith("error: /data/ds: no space left on device ("), err
    code, err = exit_of(raiser(UserError("bad key x")), capsys)
    assert "Traceback" in err and err.splitlines()[-1] == "error: bad key x"


def test_an_os_error_without_errno_is_a_bug_and_keeps_its_traceback():
    with pytest.raises(OSError, match="cannot identify"):
        run(raiser(OSError("cannot identify image file")))


def _fill_up(item: int) -> int:
    raise OSError(errno.ENOSPC, "No space left on device")  # what a worker's write() raises


def test_an_os_error_from_a_pool_worker_process_is_the_same(capsys):
    def main():
        with writing("/data/ds"):
            list(ordered_map(_fill_up, range(4), workers=2))

    code, err = exit_of(main, capsys)
    assert code == 1 and err.startswith("error: /data/ds: no space left on device ("), err


class _Failing(torch.utils.data.Dataset):
    """Raises ``error`` for every item (in the DataLoader's worker process)."""

    def __init__(self, error: Exception):
        self.error = error

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        try:
            raise KeyError(i)  # a chained error: the message is still the last one
        except KeyError:
            raise self.error from None


def _load(error: Exception):
    def main():
        list(torch.utils.data.DataLoader(_Failing(error), num_workers=1))

    return main


def test_a_user_error_from_a_dataloader_worker_is_its_message_only(capsys):
    message = "/ds: plate HEPG2-01/Plate1 well B02 site 1 is damaged (crc32c); re-fetch it"
    code, err = exit_of(_load(CorruptDataError(message)), capsys)
    assert code == 1 and err == f"error: {message}\n", err


def test_an_os_error_from_a_dataloader_worker_is_rebuilt(capsys):
    error = PermissionError(errno.EACCES, "Permission denied", "/ds/images.zarr/x")
    code, err = exit_of(_load(error), capsys)
    assert code == 1 and err.startswith("error: /ds/images.zarr/x: permission denied ("), err
    assert err.count("\n") == 1
