"""The fast site reader returns exactly what zarr-python returns."""

import numpy as np
import pytest
import zarr
from zarr.codecs import ZstdCodec

from cellblock.dataset import PackedDataset
from cellblock.errors import CorruptDataError
from cellblock.shardread import ShardReader


def test_every_chunk_of_a_plate_equals_zarr_python(tiny_packed):
    path = tiny_packed / "images.zarr" / "HUVEC-02" / "Plate1"
    reader = ShardReader.open(path)
    assert reader is not None
    array = zarr.open_array(path, mode="r")
    whole = array[:]
    n_rows, n_cols, n_sites = array.shape[:3]
    for row in range(n_rows):  # used, empty and never-written rows alike
        for col in range(n_cols):
            for site in range(n_sites):
                got = reader.read_chunk((row, col, site, 0, 0, 0))
                np.testing.assert_array_equal(got[0, 0, 0], whole[row, col, site])


def test_other_layouts_fall_back_to_zarr_python(tmp_path):
    path = tmp_path / "other.zarr"
    array = zarr.create_array(path, shape=(2, 3, 1, 2, 8, 8), chunks=(1, 1, 1, 2, 8, 8),
                              dtype="uint8", compressors=ZstdCodec(), fill_value=0)  # fmt: skip
    array[:] = np.arange(array.size, dtype=np.uint64).reshape(array.shape).astype(np.uint8)
    assert ShardReader.open(path) is None


def test_read_site_uses_the_fast_path_and_falls_back(tiny_packed, tmp_path):
    ds = PackedDataset(tiny_packed)
    site = ds.read_site("RPE-01", 3, 2, 3, 1)
    assert ds._readers["RPE-01/Plate3"] is not None
    np.testing.assert_array_equal(site, ds.plate("RPE-01", 3)[2, 3, 0])


def test_corrupt_shard_index_is_reported(tiny_packed, tmp_path):
    import shutil

    src = tiny_packed / "images.zarr" / "HEPG2-01" / "Plate1"
    dst = tmp_path / "Plate1"
    shutil.copytree(src, dst)
    meta = PackedDataset(tiny_packed).metadata
    row = int(meta[(meta.experiment == "HEPG2-01") & (meta.plate == 1)].row.iloc[0])
    shard = dst / "c" / str(row) / "0" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # flip a bit in the index
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="shard index fails its crc32c checksum"):
        ShardReader.open(dst).read_chunk((row, 0, 0, 0, 0, 0))
