"""``pack_zarr.py --upgrade``: a dataset of the previous layout becomes a fresh pack's twin."""

from __future__ import annotations

import os
import shutil

import pytest

from cellblock.errors import UserError
from cellblock.store import upgrade
from cellblock.store.pack import pack_dataset
from cellblock.store.packed import PackedDataset
from tests.conftest import ROOT, run_script
from tests.old_layout import files, root_format, write_v1

PACK = ROOT / "01_data" / "pack_zarr.py"


@pytest.fixture(scope="module")
def v1(tiny_packed, tmp_path_factory):
    """The whole tiny dataset (32 plates) in the previous layout, checksummed."""
    return write_v1(tiny_packed, tmp_path_factory.mktemp("v1") / "dataset")


def test_upgrade_equals_a_fresh_pack_byte_for_byte(v1, tiny_packed, tmp_path):
    copy = tmp_path / "dataset"
    shutil.copytree(v1, copy)
    summary = upgrade.upgrade_dataset(copy, workers=2, progress=False)
    assert summary["plates_packed"] == 32 and summary["sites_verified"] == len(
        PackedDataset(tiny_packed).metadata
    )
    assert root_format(copy) == 2 and not (copy / ".upgrade").exists()
    assert files(copy / "images.zarr") == files(tiny_packed / "images.zarr")
    assert (copy / "metadata.parquet").read_bytes() == (v1 / "metadata.parquet").read_bytes()
    again = upgrade.upgrade_dataset(copy, progress=False)
    assert again.get("already")


def test_the_script_upgrades_into_zipped_plates(tiny_raw, tmp_path):
    fresh = tmp_path / "fresh"
    pack_dataset(tiny_raw, fresh, experiments=["RPE-02"], progress=False, store="zip")
    directory = tmp_path / "directory"
    pack_dataset(tiny_raw, directory, experiments=["RPE-02"], progress=False)
    old = write_v1(directory, tmp_path / "old", checksum=False)  # packed before checksums, too
    result = run_script(PACK, "--upgrade", old, "--store", "zip", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "upgraded 4 plate(s)" in result.stdout and "verified 56 sites" in result.stdout
    assert files(old / "images.zarr") == files(fresh / "images.zarr")
    result = run_script(PACK, "--upgrade", old)
    assert result.returncode == 0 and "current layout already" in result.stdout


def test_old_layout_is_refused_with_the_command_that_converts_it(v1, tiny_raw):
    with pytest.raises(UserError, match=r"format_version 1.*pack_zarr.py --upgrade DATASET"):
        PackedDataset(v1)
    result = run_script(PACK, "--raw", tiny_raw, "--out", v1, "--experiments", "RPE-01")
    assert result.returncode == 1 and "--upgrade" in result.stderr, result.stderr
    assert root_format(v1) == 1  # untouched


def test_an_upgrade_killed_between_its_renames_finishes_on_rerun(
    v1, tiny_packed, tmp_path, monkeypatch
):
    copy = tmp_path / "dataset"
    shutil.copytree(v1, copy)
    real = os.replace

    def crash_on_second(src, dst):
        if os.fspath(dst) == os.fspath(copy / "images.zarr"):
            raise KeyboardInterrupt  # killed after moving the old layout away
        real(src, dst)

    monkeypatch.setattr(upgrade.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        upgrade.upgrade_dataset(copy, workers=1, progress=False)
    monkeypatch.setattr(upgrade.os, "replace", real)
    assert not (copy / "images.zarr").exists() and (copy / ".upgrade" / "verified").exists()
    summary = upgrade.upgrade_dataset(copy, progress=False)
    assert summary.get("already") and not (copy / ".upgrade").exists()
    assert files(copy / "images.zarr") == files(tiny_packed / "images.zarr")
