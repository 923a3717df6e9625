"""Packing PNG trees into zarr: pixel identity, layout contract, resume."""

import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from cellblock.dataset import DIMENSION_NAMES, PackedDataset
from cellblock.errors import UserError
from cellblock.metadata import SITE_COLUMNS
from cellblock.pack import pack_dataset
from cellblock.plates import site_path
from cellblock.rawtree import read_png
from cellblock.synth import write_dataset
from tests.conftest import ROOT, TINY, run_script


def test_random_sites_of_every_plate_are_pixel_identical(tiny_raw, tiny_packed):
    ds = PackedDataset(tiny_packed)
    meta = ds.metadata
    assert list(meta.columns) == SITE_COLUMNS
    rng = np.random.default_rng(0)
    plates = meta.groupby(["experiment", "plate"])
    assert len(plates) == 32 and len(ds.plate_keys()) == 32
    for (exp, plate), sites in plates:
        for i in rng.choice(len(sites), size=3, replace=False):
            s = sites.iloc[i]
            got = ds.read_site(exp, plate, s.row, s.col, s.site)
            want = np.stack(
                [
                    read_png(tiny_raw / site_path("kaggle", s.split, exp, plate, s.well, s.site, c))
                    for c in range(1, 7)
                ]
            )
            assert got.dtype == np.uint8 and got.shape == (6, 32, 32)
            np.testing.assert_array_equal(got, want, err_msg=f"{exp}/Plate{plate} {s.well}")


def test_plain_zarr_python_in_another_process_reads_the_documented_path(tiny_packed):
    code = (
        "import sys, json, zarr\n"
        "a = zarr.open_array(sys.argv[1] + '/images.zarr/HUVEC-01/Plate3', mode='r')\n"
        "print(json.dumps({'shape': a.shape, 'dims': a.metadata.dimension_names,"
        " 'dtype': str(a.dtype), 'chunks': a.chunks, 'shards': a.shards,"
        " 'zarr_format': a.metadata.zarr_format, 'sum': int(a[:].sum())}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tiny_packed)], capture_output=True, text=True, check=True
    )
    info = json.loads(out.stdout)
    assert info["shape"] == [8, 12, 2, 6, 32, 32]  # 96-well plate, 2 sites, 6 channels
    assert tuple(info["dims"]) == DIMENSION_NAMES
    assert info["dtype"] == "uint8" and info["zarr_format"] == 3
    assert info["chunks"] == [1, 1, 1, 6, 32, 32]  # one site
    assert info["shards"] == [1, 12, 2, 6, 32, 32]  # one plate row
    assert info["sum"] > 0


def test_empty_wells_are_not_written(tiny_packed):
    ds = PackedDataset(tiny_packed)
    meta = ds.metadata
    sites = meta[(meta.experiment == "U2OS-02") & (meta.plate == 2)]
    array = ds.plate("U2OS-02", 2)
    used_rows = set(sites.row)
    for row in range(8):
        shard = tiny_packed / "images.zarr" / "U2OS-02" / "Plate2" / "c" / str(row)
        assert shard.exists() == (row in used_rows), f"row {row}"
    used = set(zip(sites.row, sites.col, strict=True))
    empty = [(r, c) for r in range(8) for c in range(12) if (r, c) not in used]
    assert empty and all(not array[r, c].any() for r, c in empty)
    # a shard holds only the chunks of used wells: its size is far below a full row
    row = min(used_rows)
    n_used = sum(1 for r, _ in used if r == row)
    shard = tiny_packed / "images.zarr" / "U2OS-02" / "Plate2" / "c" / str(row) / "0/0/0/0/0"
    assert shard.stat().st_size < (n_used + 0.5) * 2 * 6 * 32 * 32


def test_plate_statistics_in_attrs(tiny_raw, tiny_packed):
    ds = PackedDataset(tiny_packed)
    info = ds.plate_info("HEPG2-02", 4)
    assert info.complete and info.cell_type == "HEPG2" and info.split == "test"
    meta = ds.metadata
    sites = meta[(meta.experiment == "HEPG2-02") & (meta.plate == 4)]
    array = ds.plate("HEPG2-02", 4)
    pixels = np.stack([array[s.row, s.col, s.site - 1] for s in sites.itertuples()])
    mean, std = info.channel_stats("all")
    np.testing.assert_allclose(mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(std, pixels.std(axis=(0, 2, 3)), rtol=1e-4)
    neg = sites.well_type.to_numpy() == "negative_control"
    assert neg.sum() == 2  # one well, two sites
    mean, _ = info.channel_stats("negative_control")
    np.testing.assert_allclose(mean, pixels[neg].mean(axis=(0, 2, 3)), rtol=1e-5)


def test_missing_plate_lists_available(tiny_packed):
    with pytest.raises(UserError, match=r"no plate HEPG2-09/Plate1 .* available: HEPG2-01/Plate1"):
        PackedDataset(tiny_packed).plate("HEPG2-09", 1)


def test_rerun_skips_complete_plates_and_redoes_incomplete(tiny_raw, tmp_path):
    out = tmp_path / "ds"
    first = pack_dataset(tiny_raw, out, experiments=["RPE-01"], progress=False)
    assert first["plates_packed"] == 4
    again = pack_dataset(tiny_raw, out, experiments=["RPE-01"], progress=False)
    assert (again["plates_packed"], again["plates_skipped"]) == (0, 4)
    plate = zarr.open_array(out / "images.zarr" / "RPE-01" / "Plate2", mode="r+")
    attrs = dict(plate.attrs)["cellblock"]
    plate.attrs["cellblock"] = {**attrs, "complete": False}  # as if killed mid-plate
    third = pack_dataset(tiny_raw, out, experiments=["RPE-01", "RPE-02"], progress=False)
    assert (third["plates_packed"], third["plates_skipped"]) == (5, 3)
    assert set(PackedDataset(out).metadata.experiment) == {"RPE-01", "RPE-02"}


@pytest.mark.slow
def test_killed_pack_resumes_to_identical_result(tiny_raw, tiny_packed, tmp_path):
    out = tmp_path / "ds"
    cmd = [
        sys.executable,
        str(ROOT / "01_data/pack_zarr.py"),
        "--raw",
        str(tiny_raw),
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        metas = (out / "images.zarr").glob("*/Plate*/zarr.json")
        if sum('"complete": true' in m.read_text() for m in metas) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the packer finished before this test could kill it"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metadata.parquet").exists(), "killed before the end: no metadata yet"
    done = run_script(*cmd[1:])
    assert done.returncode == 0, done.stderr
    packed, skipped = map(
        int, re.search(r"packed (\d+) plate.*\((\d+) already", done.stdout).groups()
    )
    assert packed > 0 and skipped >= 3 and packed + skipped == 32, done.stdout
    ref, got = PackedDataset(tiny_packed), PackedDataset(out)
    assert got.plate_keys() == ref.plate_keys()
    for key in ref.plate_keys():
        exp, plate = key.split("/Plate")
        np.testing.assert_array_equal(got.plate(exp, int(plate))[:], ref.plate(exp, int(plate))[:])
        assert got.plate_info(exp, int(plate)) == ref.plate_info(exp, int(plate))
    assert got.metadata.equals(ref.metadata)


def test_v1_layout_packs_to_the_same_pixels(tiny_packed, tmp_path):
    v1 = tmp_path / "v1"
    write_dataset(TINY, v1, layout="v1", experiments=["U2OS-01"], progress=False)
    out = tmp_path / "ds"
    summary = pack_dataset(v1, out, workers=2, verify=True, progress=False)
    assert summary["layout"] == "v1" and summary["sites_verified"] == summary["sites"]
    a, b = PackedDataset(out), PackedDataset(tiny_packed)
    for plate in range(1, 5):
        np.testing.assert_array_equal(a.plate("U2OS-01", plate)[:], b.plate("U2OS-01", plate)[:])
