"""Every chunk cellblock writes carries a crc32c checksum, and every reader checks it.

A flipped byte in a packed image chunk or a predictions chunk is a named error (dataset
or store, plate, well, site) from ``read_site``, from the training loader, from
``pack_zarr.py --verify`` and from ``ensemble.py``, never silently different pixels or
logits. zarr-python, reading the same files on its own, rejects them too.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from cellblock.errors import CorruptDataError
from cellblock.store.chunkwrite import ChunkWriter
from cellblock.store.omezarr import chunk_name, field_name
from cellblock.store.pack import pack_dataset
from cellblock.store.packed import PackedDataset
from cellblock.store.predictions import read_sites
from tests.conftest import ROOT, run_script
from tests.test_ensemble_combine import crafted_store, split_plates

PACK = ROOT / "01_data" / "pack_zarr.py"
ENSEMBLE = ROOT / "04_ensemble" / "ensemble.py"
TRAIN = ROOT / "02_train" / "synthetic" / "tiny" / "train.py"
SITE_RE = r"plate \S+/Plate\d+ well [A-Z]+\d\d site \d"


def _field(ds_path: Path, experiment: str, plate: int, row: int, col: int, site: int) -> str:
    """A site's field path in its plate, e.g. ``"B/02/0"``."""
    return field_name(PackedDataset(ds_path).info.plate_format, row, col, site)


def flip_site(ds_path: Path, experiment: str, plate: int, row: int, col: int, site: int) -> None:
    """Flip one byte in the middle of a site's compressed chunk (a folder or a zip member)."""
    ds = PackedDataset(ds_path)
    name = chunk_name(_field(ds_path, experiment, plate, row, col, site))
    path = ds.plate_path(experiment, plate)
    if path.is_dir():
        chunk = path / name
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0x40
        chunk.write_bytes(bytes(data))
        return
    with zipfile.ZipFile(path) as zf:  # the member is STORED: its bytes lie in the file
        info = zf.getinfo(name)
        stored = zf.read(name)
    whole = bytearray(path.read_bytes())
    at = whole.index(stored, info.header_offset)
    whole[at + len(stored) // 2] ^= 0x40
    path.write_bytes(bytes(whole))


@pytest.fixture
def damaged(tiny_packed, tmp_path):
    """A copy of the tiny dataset with one flipped byte in one site; (path, site row)."""
    copy = tmp_path / "dataset"
    shutil.copytree(tiny_packed, copy)
    site = PackedDataset(copy).metadata.iloc[5]
    flip_site(copy, site.experiment, int(site.plate), int(site.row), int(site.col), int(site.site))
    return copy, site


def test_packed_chunks_carry_crc32c(tiny_packed):
    ds = PackedDataset(tiny_packed)
    key = ds.plate_keys()[0]
    for level_json in (tiny_packed / "images.zarr" / key).glob("*/*/*/*/zarr.json"):
        meta = json.loads(level_json.read_text())  # every level of every field
        assert [c["name"] for c in meta["codecs"]] == ["bytes", "zstd", "crc32c"]
    exp, plate = key.split("/Plate")
    ds.plate(exp, int(plate))
    assert ds._plates[key].reader.checksummed


def test_flipped_byte_is_a_named_error_from_read_site(damaged):
    copy, s = damaged
    ds = PackedDataset(copy)
    with pytest.raises(CorruptDataError, match=SITE_RE) as err:
        ds.read_site(s.experiment, int(s.plate), int(s.row), int(s.col), int(s.site))
    message = str(err.value)
    assert str(copy) in message
    assert f"well {s.well} site {s.site}" in message and "crc32c" in message
    # the neighbouring site of the same shard still reads
    other = PackedDataset(copy).metadata.iloc[4]
    ds.read_site(other.experiment, int(other.plate), int(other.row), int(other.col),
                 int(other.site))  # fmt: skip


def test_zarr_python_alone_rejects_the_damaged_chunk(damaged):
    copy, s = damaged
    code = (
        "import sys, zarr\n"
        "a = zarr.open_array(sys.argv[1], mode='r')\n"
        "try:\n    a[:]\n"
        "except ValueError as e:\n    print('rejected', e); sys.exit(3)\n"
    )
    field = _field(copy, s.experiment, int(s.plate), int(s.row), int(s.col), int(s.site))
    array = PackedDataset(copy).plate_path(s.experiment, int(s.plate)) / field / "0"
    result = subprocess.run([sys.executable, "-c", code, str(array)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    assert "checksum" in result.stdout


def test_verify_reports_the_damaged_site_with_and_without_the_pngs(damaged, tiny_raw):
    copy, s = damaged
    for args in (["--out", copy, "--verify"], ["--raw", tiny_raw, "--out", copy, "--verify"]):
        result = run_script(PACK, *args)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "1 damaged or differing site" in result.stderr
        assert f"well {s.well} site {s.site} is damaged" in result.stderr
        assert "Traceback" not in result.stderr


def test_verify_passes_an_intact_copy(tiny_packed):
    result = run_script(PACK, "--out", tiny_packed, "--verify", "--workers", "2")
    assert result.returncode == 0, result.stderr
    n = len(PackedDataset(tiny_packed).metadata)
    assert f"verified {n} sites" in result.stdout


@pytest.mark.slow
def test_training_loader_stops_on_a_damaged_site(tiny_packed, tmp_path):
    """Every training site damaged: the first batch of a loader worker hits one."""
    copy = tmp_path / "dataset"
    shutil.copytree(tiny_packed, copy)
    table = PackedDataset(copy).metadata
    for s in table[table.split == "train"].itertuples():
        flip_site(copy, s.experiment, int(s.plate), int(s.row), int(s.col), int(s.site))
    result = run_script(TRAIN, "4", "--data", copy, "--out", tmp_path / "run",
                        "--set", "train.workers=1")  # fmt: skip
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(copy) in last and "is damaged" in last, last
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "run" / "checkpoints").glob("*.pt"))


def test_unverified_old_dataset_still_reads_with_a_warning(tiny_packed, tmp_path, caplog):
    """Fields written without chunk checksums (zstd only) read, and say they are unverified."""
    copy = tmp_path / "dataset"
    shutil.copytree(tiny_packed, copy)
    key = PackedDataset(copy).plate_keys()[0]
    pixels = PackedDataset(copy).plate(*key.split("/Plate"))[:]  # PlateView("EXP", "N")
    for level in (copy / "images.zarr" / key).glob("*/*/*/[0-9]"):
        old = zarr.open_array(level, mode="r")
        data = old[:]
        shutil.rmtree(level)
        zarr.create_array(level, shape=data.shape, chunks=data.shape, dtype="uint8",
                          fill_value=0, compressors=zarr.codecs.ZstdCodec(level=3),
                          dimension_names=("c", "y", "x"))[:] = data  # fmt: skip
    ds = PackedDataset(copy)
    s = ds.metadata[ds.metadata.experiment == key.split("/")[0]].iloc[0]
    with caplog.at_level(logging.WARNING):
        got = ds.read_site(s.experiment, int(s.plate), int(s.row), int(s.col), int(s.site))
    assert ds._plates[key].reader is not None and not ds._plates[key].reader.checksummed
    np.testing.assert_array_equal(got, pixels[s.row, s.col, s.site - 1])
    assert "without chunk checksums" in caplog.text


def test_flipped_byte_in_a_zipped_plate_is_a_named_error(tiny_raw, tmp_path):
    out = tmp_path / "zipped"
    pack_dataset(tiny_raw, out, experiments=["RPE-02"], progress=False, store="zip")
    s = PackedDataset(out).metadata.iloc[3]
    flip_site(out, s.experiment, int(s.plate), int(s.row), int(s.col), int(s.site))
    with pytest.raises(CorruptDataError, match=f"well {s.well} site {s.site} is damaged"):
        PackedDataset(out).read_site(s.experiment, int(s.plate), int(s.row), int(s.col),
                                     int(s.site))  # fmt: skip
    result = run_script(PACK, "--out", out, "--verify")
    assert result.returncode == 1 and "1 damaged or differing site" in result.stderr


# --- predictions ------------------------------------------------------------------------


def _flip_logits_chunk(store: Path, key: str, row: int, col: int) -> None:
    path = store / key / "logits" / "c" / str(row) / str(col) / "0" / "0"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_prediction_chunks_carry_crc32c_and_match_zarr_python(tiny_packed, tmp_path):
    store = crafted_store(tmp_path / "pred", tiny_packed, plates=split_plates(tiny_packed))
    key = split_plates(tiny_packed)[0]
    meta = json.loads((store / key / "logits" / "zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"]] == ["bytes", "zstd", "crc32c"]
    writer = ChunkWriter.open(store / key / "logits")
    assert writer is not None and writer.checksummed
    # the chunk writer's file is exactly what zarr-python writes for the same values
    values = np.random.default_rng(0).normal(size=writer.chunk_shape).astype(np.float32)
    writer.write_chunk((0, 0, 0, 0), values)
    ours = writer.chunk_file((0, 0, 0, 0)).read_bytes()
    zarr.open_array(store / key / "logits", mode="r+")[0:1, 0:1] = values
    assert writer.chunk_file((0, 0, 0, 0)).read_bytes() == ours


def test_flipped_prediction_byte_is_named_by_read_sites_and_ensemble(tiny_packed, tmp_path):
    plates = split_plates(tiny_packed)
    store = crafted_store(tmp_path / "pred", tiny_packed, plates=plates)
    table = PackedDataset(tiny_packed).metadata
    key = plates[0]
    exp, plate = key.split("/Plate")
    site = table[(table.experiment == exp) & (table.plate == int(plate))].iloc[0]
    _flip_logits_chunk(store, key, int(site.row), int(site.col))
    damaged = f"plate {key} logits of well {site.well} is damaged"
    with pytest.raises(CorruptDataError, match=damaged):
        read_sites(tmp_path / "pred", table[table.experiment == exp])
    result = run_script(ENSEMBLE, tmp_path / "pred", "--data", tiny_packed,
                        "--out", tmp_path / "out")  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"well {site.well} is damaged" in result.stderr and str(store) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "submission.csv").exists()
