"""The fast site readers return exactly what zarr-python returns.

``FieldReader`` reads the current layout's fields (folders and zipped plates);
``ShardReader`` the previous layout's sharded plate arrays (what ``--upgrade`` reads).
"""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import zarr
from zarr.codecs import ZstdCodec
from zarr.storage import ZipStore

from cellblock.errors import CorruptDataError
from cellblock.store.fieldread import FieldReader
from cellblock.store.omezarr import field_name
from cellblock.store.pack import pack_dataset
from cellblock.store.packed import PackedDataset
from cellblock.store.platestore import open_plate
from cellblock.store.shardread import ShardReader
from tests.old_layout import write_v1


@pytest.fixture(scope="module")
def zipped(tiny_raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("zipped") / "dataset"
    pack_dataset(tiny_raw, out, experiments=["HUVEC-02"], workers=2, progress=False, store="zip")
    return out


@pytest.mark.parametrize("store", ["directory", "zip"])
def test_every_field_of_a_plate_equals_zarr_python(tiny_packed, zipped, store):
    ds = PackedDataset(tiny_packed if store == "directory" else zipped)
    path = ds.plate_path("HUVEC-02", 1)
    files = open_plate(path)
    group = zarr.open_group(ZipStore(path, mode="r") if store == "zip" else path, mode="r")
    fmt = ds.info.plate_format
    first = json.loads(files.read("zarr.json"))["attributes"]["ome"]["plate"]["wells"][0]["path"]
    reader = FieldReader.open(files, f"{first}/0/0")
    assert reader is not None and reader.checksummed
    n_read = 0
    for row in range(fmt.n_rows):  # imaged and never-imaged wells alike
        for col in range(fmt.n_cols):
            for site in (1, 2):
                name = field_name(fmt, row, col, site)
                got = reader.read(name)
                if name in group:
                    np.testing.assert_array_equal(got, group[f"{name}/0"][:])
                    n_read += 1
                else:
                    assert got.shape == (6, 32, 32) and not got.any()
    assert n_read == len(ds.metadata.query("experiment == 'HUVEC-02' and plate == 1"))


def test_other_layouts_fall_back_to_zarr_python(tiny_packed, tmp_path):
    copy = tmp_path / "dataset"
    shutil.copytree(tiny_packed, copy)
    ds = PackedDataset(copy)
    s = ds.metadata.iloc[3]
    want = ds.read_site(s.experiment, int(s.plate), int(s.row), int(s.col), int(s.site))
    plate = ds.plate_path(s.experiment, int(s.plate))
    for field in plate.glob("*/*/[0-9]"):  # every field re-written by zarr-python, sharded
        pixels = zarr.open_array(field / "0", mode="r")[:]
        shutil.rmtree(field / "0")
        array = zarr.create_array(
            field / "0",
            shape=pixels.shape,
            chunks=(1, 16, 16),
            shards=pixels.shape,
            dtype="uint8",
            compressors=ZstdCodec(),
            fill_value=0,
        )
        array[:] = pixels
    fresh = PackedDataset(copy)
    got = fresh.read_site(s.experiment, int(s.plate), int(s.row), int(s.col), int(s.site))
    assert fresh._plates[f"{s.experiment}/Plate{s.plate}"].reader is None
    np.testing.assert_array_equal(got, want)


def test_read_site_uses_the_fast_path(tiny_packed):
    ds = PackedDataset(tiny_packed)
    site = ds.read_site("RPE-01", 3, 2, 3, 1)
    assert ds._plates["RPE-01/Plate3"].reader is not None
    np.testing.assert_array_equal(site, ds.plate("RPE-01", 3)[2, 3, 0])


def test_zip_reader_survives_pickling_and_forking(zipped):
    import multiprocessing
    import pickle

    ds = PackedDataset(zipped)
    s = ds.metadata.iloc[0]
    want = ds.read_site(s.experiment, int(s.plate), int(s.row), int(s.col), int(s.site))
    again = pickle.loads(pickle.dumps(ds))  # each process opens its own files
    np.testing.assert_array_equal(
        again.read_site(s.experiment, int(s.plate), int(s.row), int(s.col), int(s.site)), want
    )
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply(
            ds.read_site, (s.experiment, int(s.plate), int(s.row), int(s.col), int(s.site))
        )
    np.testing.assert_array_equal(got, want)


# --- the previous layout (read by --upgrade) ---------------------------------------------


@pytest.fixture(scope="module")
def v1(tiny_packed, tmp_path_factory):
    return write_v1(tiny_packed, tmp_path_factory.mktemp("v1") / "dataset")


def test_every_chunk_of_a_v1_plate_equals_zarr_python(v1):
    path = v1 / "images.zarr" / "HUVEC-02" / "Plate1"
    reader = ShardReader.open(path)
    assert reader is not None and reader.checksummed
    whole = zarr.open_array(path, mode="r")[:]
    n_rows, n_cols, n_sites = whole.shape[:3]
    for row in range(n_rows):  # used, empty and never-written rows alike
        for col in range(n_cols):
            for site in range(n_sites):
                got = reader.read_chunk((row, col, site, 0, 0, 0))
                np.testing.assert_array_equal(got[0, 0, 0], whole[row, col, site])


def test_other_v1_layouts_are_refused(tmp_path):
    path = tmp_path / "other.zarr"
    array = zarr.create_array(
        path,
        shape=(2, 3, 1, 2, 8, 8),
        chunks=(1, 1, 1, 2, 8, 8),
        dtype="uint8",
        compressors=ZstdCodec(),
        fill_value=0,
    )
    array[:] = np.arange(array.size, dtype=np.uint64).reshape(array.shape).astype(np.uint8)
    assert ShardReader.open(path) is None


def test_corrupt_shard_index_is_reported(v1, tmp_path):
    src = v1 / "images.zarr" / "HEPG2-01" / "Plate1"
    dst = tmp_path / "Plate1"
    shutil.copytree(src, dst)
    table = pd.read_parquet(v1 / "metadata.parquet")
    row = int(table[(table.experiment == "HEPG2-01") & (table.plate == 1)].row.iloc[0])
    shard = dst / "c" / str(row) / "0" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # flip a bit in the index
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="shard index fails its crc32c checksum"):
        ShardReader.open(dst).read_chunk((row, 0, 0, 0, 0, 0))
