"""Packing PNG trees into OME-Zarr plates: pixel identity, layout contract, resume."""

import json
import re
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from cellblock.errors import UserError
from cellblock.screen.metadata import SITE_COLUMNS
from cellblock.screen.plates import plate_key, site_path
from cellblock.store.omezarr import LEVELS, downsample
from cellblock.store.pack import pack_dataset
from cellblock.store.packed import PackedDataset
from cellblock.store.rawtree import read_png
from cellblock.synth import write_dataset
from tests.conftest import ROOT, TINY, run_script
from tests.old_layout import files


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
                    read_png(
                        tiny_raw
                        / site_path("kaggle", s.split, exp, plate, s.well, s.site, channel=c)
                    )
                    for c in range(1, 7)
                ]
            )
            assert got.dtype == np.uint8 and got.shape == (6, 32, 32)
            np.testing.assert_array_equal(got, want, err_msg=f"{exp}/Plate{plate} {s.well}")


def test_plain_zarr_python_in_another_process_reads_the_documented_path(tiny_packed):
    meta = PackedDataset(tiny_packed).metadata
    s = meta[(meta.experiment == "HUVEC-01") & (meta.plate == 3)].iloc[0]
    field = f"{s.well[0]}/{s.well[1:]}/{s.site - 1}"  # B02 site 1 -> B/02/0
    code = (
        "import sys, json, zarr\n"
        "levels = []\n"
        "for level in range(3):\n"
        "    a = zarr.open_array(sys.argv[1] + '/images.zarr/HUVEC-01/Plate3/' + sys.argv[2]"
        " + f'/{level}', mode='r')\n"
        "    levels.append({'shape': a.shape, 'dims': a.metadata.dimension_names,"
        " 'dtype': str(a.dtype), 'chunks': a.chunks, 'zarr_format': a.metadata.zarr_format,"
        " 'sum': int(a[:].sum())})\n"
        "print(json.dumps(levels))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tiny_packed), field],
                         capture_output=True, text=True, check=True)  # fmt: skip
    levels = json.loads(out.stdout)
    assert [lv["shape"] for lv in levels] == [[6, 32, 32], [6, 8, 8], [6, 2, 2]]  # 1, 1/4, 1/16
    assert all(lv["chunks"] == lv["shape"] for lv in levels)  # one chunk per level
    assert all(tuple(lv["dims"]) == ("c", "y", "x") for lv in levels)
    assert all(lv["dtype"] == "uint8" and lv["zarr_format"] == 3 for lv in levels)
    assert levels[0]["sum"] > 0


def test_pyramid_levels_are_block_means_of_the_site(tiny_packed):
    import zarr

    meta = PackedDataset(tiny_packed).metadata
    s = meta.iloc[7]
    field = tiny_packed / "images.zarr" / s.experiment / f"Plate{s.plate}" / s.well[0] / s.well[1:]
    full = zarr.open_array(field / str(s.site - 1) / "0", mode="r")[:]
    for level, factor in enumerate(LEVELS):
        got = zarr.open_array(field / str(s.site - 1) / str(level), mode="r")[:]
        np.testing.assert_array_equal(got, downsample(full, factor))
    blocks = full.reshape(6, 8, 4, 8, 4).astype(float).mean((2, 4))
    assert np.abs(downsample(full, 4) - blocks).max() <= 0.5


def test_empty_wells_are_not_written(tiny_packed):
    ds = PackedDataset(tiny_packed)
    meta = ds.metadata
    sites = meta[(meta.experiment == "U2OS-02") & (meta.plate == 2)]
    plate = tiny_packed / "images.zarr" / "U2OS-02" / "Plate2"
    used = set(zip(sites.row, sites.col, strict=True))
    fmt = ds.info.plate_format
    for r in range(8):
        for c in range(12):
            well = fmt.well_name(r, c)
            assert (plate / well[0] / well[1:]).exists() == ((r, c) in used), well
    ome = json.loads((plate / "zarr.json").read_text())["attributes"]["ome"]["plate"]
    assert sorted(w["path"] for w in ome["wells"]) == sorted(
        f"{fmt.well_name(r, c)[0]}/{fmt.well_name(r, c)[1:]}" for r, c in used
    )
    array = ds.plate("U2OS-02", 2)
    empty = [(r, c) for r in range(8) for c in range(12) if (r, c) not in used]
    assert empty and all(not array[r, c].any() for r, c in empty)


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
    ref = {k: v for k, v in files(out / "images.zarr").items() if k.startswith("RPE-01/")}
    again = pack_dataset(tiny_raw, out, experiments=["RPE-01"], progress=False)
    assert (again["plates_packed"], again["plates_skipped"]) == (0, 4)
    meta = out / "images.zarr" / "RPE-01" / "Plate2" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["cellblock"]["complete"] = False  # as if killed mid-plate
    meta.write_text(json.dumps(doc))
    (out / "images.zarr" / "RPE-01" / "Plate2" / "B" / "stray").write_text("left by a crash")
    third = pack_dataset(tiny_raw, out, experiments=["RPE-01", "RPE-02"], progress=False)
    assert (third["plates_packed"], third["plates_skipped"]) == (5, 3)
    assert set(PackedDataset(out).metadata.experiment) == {"RPE-01", "RPE-02"}
    redone = files(out / "images.zarr")
    assert {k: v for k, v in redone.items() if k.startswith("RPE-01/")} == ref  # same bytes


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
        metas = (out / "images.zarr").glob("*/Plate*/zarr.json")  # written last: complete
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


def test_zip_store_holds_the_same_tree_in_one_file_per_plate(tiny_raw, tiny_packed, tmp_path):
    out = tmp_path / "zipped"
    summary = pack_dataset(tiny_raw, out, experiments=["HUVEC-02"], workers=2, verify=True,
                           progress=False, store="zip")  # fmt: skip
    assert summary["store"] == "zip" and summary["sites_verified"] == summary["sites"]
    plates = sorted((out / "images.zarr" / "HUVEC-02").iterdir())
    assert [p.name for p in plates] == [f"Plate{i}.ozx" for i in range(1, 5)] + ["zarr.json"]
    for i in range(1, 5):
        folder = tiny_packed / "images.zarr" / "HUVEC-02" / f"Plate{i}"
        with zipfile.ZipFile(out / "images.zarr" / "HUVEC-02" / f"Plate{i}.ozx") as zf:
            infos = zf.infolist()
            assert all(info.compress_type == zipfile.ZIP_STORED for info in infos)
            names = [info.filename for info in infos]
            json_first = [n.endswith("zarr.json") for n in names]
            assert json_first == sorted(json_first, reverse=True)  # RFC-9: zarr.json first
            assert names[0] == "zarr.json" and json.loads(zf.comment)["ome"]["version"] == "0.5"
            assert {n: zf.read(n) for n in names} == files(folder)  # the same tree, byte for byte
    a, b = PackedDataset(out), PackedDataset(tiny_packed)
    assert a.info.store == "zip" and a.plate_keys() == [f"HUVEC-02/Plate{i}" for i in range(1, 5)]
    for plate in range(1, 5):
        np.testing.assert_array_equal(a.plate("HUVEC-02", plate)[:], b.plate("HUVEC-02", plate)[:])
    with pytest.raises(UserError, match="different geometry or store"):
        pack_dataset(tiny_raw, out, experiments=["HUVEC-02"], progress=False)


def test_zstd_level_from_the_command_line_changes_bytes_not_pixels(tiny_raw, tiny_packed, tmp_path):
    out = tmp_path / "fast"
    r = run_script(ROOT / "01_data/pack_zarr.py", "--raw", tiny_raw, "--out", out,
                   "--experiments", "HEPG2-01", "--zstd-level", "3", "--verify")  # fmt: skip
    assert r.returncode == 0, r.stderr
    plate = json.loads((out / "images.zarr/HEPG2-01/Plate1/zarr.json").read_text())
    field = f"HEPG2-01/Plate1/{plate['attributes']['ome']['plate']['wells'][0]['path']}/0/0"
    meta = json.loads((out / "images.zarr" / field / "zarr.json").read_text())
    assert [c.get("configuration", {}).get("level") for c in meta["codecs"]][1] == 3
    fast, slow = (p / "images.zarr" / field / "c/0/0/0" for p in (out, tiny_packed))
    assert fast.read_bytes() != slow.read_bytes()
    a, b = PackedDataset(out), PackedDataset(tiny_packed)
    np.testing.assert_array_equal(a.plate("HEPG2-01", 1)[:], b.plate("HEPG2-01", 1)[:])


@pytest.mark.parametrize("store", ["directory", "zip"])
def test_pack_counts_its_size_while_writing_no_closing_walk(tiny_raw, tmp_path, monkeypatch, store):
    from cellblock.store import storesize

    out = tmp_path / store
    first = pack_dataset(tiny_raw, out, experiments=["RPE-01"], progress=False, store=store)
    walked = storesize.du(out / "images.zarr")
    assert first["bytes"] == walked > 0

    def no_walk(path):
        raise AssertionError(f"walked {path}")

    # the rest of the screen, and a resumed run's skipped plates: counted, not walked
    monkeypatch.setattr(storesize, "du", no_walk)
    second = pack_dataset(tiny_raw, out, progress=False, store=store)
    assert second["plates_skipped"] == first["plates_packed"] > 0
    monkeypatch.undo()
    images = out / "images.zarr"
    assert second["bytes"] == storesize.du(images) > walked
    if store == "directory":  # a plate packed before sizes were recorded: walked instead
        meta = images / "RPE-01" / "Plate1" / "zarr.json"
        doc = json.loads(meta.read_text())
        del doc["attributes"]["cellblock"]["member_bytes"]
        meta.write_text(json.dumps(doc))
        table = PackedDataset(out).metadata
        keys = {plate_key(e, int(p)) for e, p in zip(table.experiment, table.plate, strict=True)}
        assert storesize.images_bytes(images, keys, store) == storesize.du(images)
