"""cellblock.store.predictions: the store between prediction and ensembling (real zarr)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import zarr

from cellblock.errors import UserError
from cellblock.store.chunkwrite import ChunkWriter
from cellblock.store.packed import PackedDataset
from cellblock.store.predictions import (
    ATTR,
    FORMAT_VERSION,
    PredictionInfo,
    create_store,
    open_info,
    read_sites,
    store_path,
    write_wells,
)


@pytest.fixture(scope="module")
def packed(tiny_packed) -> PackedDataset:
    return PackedDataset(tiny_packed)


def _info(packed: PackedDataset, **changes) -> PredictionInfo:
    info = PredictionInfo(
        setup="synthetic/tiny",
        run="/runs/synthetic/tiny",
        iteration=20,
        classes=tuple(range(5)),
        tta="flips",
        channels=(1, 2, 3, 4, 5, 6),
        embedding_dim=3,
        dataset=str(packed.path),
        code_version="test",
    )
    return dataclasses.replace(info, **changes)


def _plate(packed: PackedDataset, key: str):
    exp, plate = key.split("/Plate")
    m = packed.metadata
    return m[(m["experiment"] == exp) & (m["plate"] == int(plate))]


def _fill(packed, path, key, seed=0):
    """Write every well of a plate with distinct values; return them by (row, col)."""
    rng = np.random.default_rng(seed)
    wells = [tuple(w) for w in _plate(packed, key)[["row", "col"]].drop_duplicates().to_numpy()]
    logits = rng.normal(size=(len(wells), 2, 5)).astype(np.float32)
    embeddings = rng.normal(size=(len(wells), 2, 3)).astype(np.float32)
    write_wells(path, key, wells, logits, embeddings)
    return wells, logits, embeddings


def test_roundtrip_layout_and_provenance(packed, tmp_path):
    key = packed.plate_keys()[0]
    info = _info(packed)
    path = create_store(tmp_path / "pred", info, packed, [key])
    assert path == tmp_path / "pred" / "predictions.zarr" == store_path(tmp_path / "pred")
    assert store_path(path) == path
    assert open_info(tmp_path / "pred") == info
    wells, logits, embeddings = _fill(packed, path, key)
    array = zarr.open_array(path / key / "logits")
    assert array.shape == (8, 12, 2, 5) and array.chunks == (1, 1, 2, 5)  # a chunk per well
    assert array.dtype == np.float32 and array.metadata.dimension_names[:3] == (
        "row",
        "col",
        "site",
    )
    assert zarr.open_array(path / key / "embeddings").dtype == np.float16
    meta = json.loads((path / key / "zarr.json").read_text())
    exp, plate = key.split("/Plate")
    assert meta["attributes"]["cellblock"] == {
        "experiment": exp, "plate": int(plate),
        "rows": list("ABCDEFGH"), "columns": [f"{c:02d}" for c in range(1, 13)],
    }  # fmt: skip
    # the same row/column names as the dataset's OME-Zarr plate: a prediction's indices
    # name its field's path
    attrs = meta["attributes"]["cellblock"]
    r, c = wells[0]
    field = packed.plate_path(exp, int(plate)) / attrs["rows"][r] / attrs["columns"][c] / "0"
    assert (field / "zarr.json").is_file() and packed.info.plate_format.well_name(r, c) == (
        attrs["rows"][r] + attrs["columns"][c]
    )
    # wells the plate does not use are never written: no chunk on disk, NaN on read
    chunks = sorted(p.relative_to(path / key / "logits") for p in
                    (path / key / "logits" / "c").rglob("*") if p.is_file())  # fmt: skip
    assert len(chunks) == len(wells)
    assert np.isnan(array[0, 0]).all()

    table = _plate(packed, key).sample(frac=1.0, random_state=1)  # any row order
    got_info, got_logits, got_embeddings = read_sites(tmp_path / "pred", table)
    assert got_info == info
    for i, (row, col, site) in enumerate(table[["row", "col", "site"]].to_numpy()):
        w = wells.index((row, col))
        assert np.array_equal(got_logits[i], logits[w, site - 1])
        want = embeddings[w, site - 1].astype(np.float16).astype(np.float32)
        assert np.array_equal(got_embeddings[i], want)


def test_write_is_idempotent(packed, tmp_path):
    key = packed.plate_keys()[1]
    path = create_store(tmp_path, _info(packed), packed, [key])
    _fill(packed, path, key, seed=3)
    first = zarr.open_array(path / key / "logits")[:]
    files = {p: p.read_bytes() for p in (path / key).rglob("*") if p.is_file()}
    _fill(packed, path, key, seed=3)
    assert np.array_equal(zarr.open_array(path / key / "logits")[:], first, equal_nan=True)
    assert {p: p.read_bytes() for p in (path / key).rglob("*") if p.is_file()} == files


def test_reopen_resumes_or_refuses(packed, tmp_path):
    keys = packed.plate_keys()[:2]
    path = create_store(tmp_path, _info(packed), packed, keys[:1])
    wells, logits, _ = _fill(packed, path, keys[0])
    # same classes/width/dataset/channels: kept, new plates added, provenance updated
    later = _info(packed, iteration=40)
    create_store(tmp_path, later, packed, keys)
    assert open_info(path).iteration == 40
    assert np.array_equal(zarr.open_array(path / keys[0] / "logits")[wells[0]], logits[0])
    assert (path / keys[1] / "logits" / "zarr.json").is_file()
    for change in ({"classes": (0, 1)}, {"embedding_dim": 4}, {"channels": (1, 2)},
                   {"dataset": "/elsewhere"}):  # fmt: skip
        field = next(iter(change))
        with pytest.raises(UserError, match=f"exists with another {field}.*--overwrite"):
            create_store(tmp_path, _info(packed, **change), packed, keys)
    create_store(tmp_path, _info(packed, classes=(0, 1)), packed, keys, overwrite=True)
    assert open_info(path).classes == (0, 1)
    assert np.isnan(zarr.open_array(path / keys[0] / "logits")[wells[0]]).all()


def test_never_predicted_sites_and_missing_plates_are_errors(packed, tmp_path):
    keys = packed.plate_keys()
    path = create_store(tmp_path, _info(packed), packed, keys[:1])
    table = _plate(packed, keys[0])
    with pytest.raises(UserError, match=rf"sites of plate {keys[0]} have no logits"):
        read_sites(path, table)
    wells, logits, embeddings = _fill(packed, path, keys[0])
    write_wells(path, keys[0], wells[:1], np.full_like(logits[:1], np.nan), embeddings[:1])
    with pytest.raises(UserError, match=r"2 sites of plate .* have no logits \(first: well "):
        read_sites(path, table)
    # a hole in the embeddings alone (a chunk gone) is named too, with its well and site
    wells, logits, embeddings = _fill(packed, path, keys[0])
    write_wells(path, keys[0], wells[:1], logits[:1], np.full_like(embeddings[:1], np.nan))
    name = packed.info.plate_format.well_name(*wells[0])
    with pytest.raises(UserError, match=rf"have no embeddings \(first: well {name} site 1\)"):
        read_sites(path, table)
    with pytest.raises(UserError, match=rf"no predictions for plate {keys[1]}"):
        read_sites(path, _plate(packed, keys[1]))


def test_foreign_or_broken_stores(packed, tmp_path):
    with pytest.raises(UserError, match="no predictions store here"):
        open_info(tmp_path / "nothing")
    (tmp_path / "junk" / "predictions.zarr").mkdir(parents=True)
    with pytest.raises(UserError, match="not a zarr group"):
        open_info(tmp_path / "junk")
    zarr.open_group(tmp_path / "other" / "predictions.zarr", mode="w")
    with pytest.raises(UserError, match=f"no {ATTR!r} attributes"):
        open_info(tmp_path / "other")
    obj = _info(packed).to_json()
    for key in ("iteration", "classes"):
        broken = {**obj, key: "x"}
        with pytest.raises(UserError, match=f"field {key!r} missing or not"):
            PredictionInfo.from_json(broken, "here")
    with pytest.raises(UserError, match=f"format_version 99, this code reads {FORMAT_VERSION}"):
        PredictionInfo.from_json({**obj, "format_version": 99}, "here")
    assert PredictionInfo.from_json(obj, "here") == _info(packed)


@pytest.mark.parametrize("compressors", ["auto", None])
def test_chunk_writer_writes_the_bytes_zarr_writes(tmp_path, compressors):
    # the fast path of write_wells against zarr-python itself, chunk file by chunk file
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float16"):
        arrays = {}
        for name in ("by_zarr", "by_writer"):
            arrays[name] = zarr.create_array(
                tmp_path / f"{name}_{dtype}", shape=(3, 4, 2, 5), chunks=(1, 1, 2, 5),
                dtype=dtype, fill_value=np.nan, compressors=compressors,
            )  # fmt: skip
        writer = ChunkWriter.open(tmp_path / f"by_writer_{dtype}")
        assert writer is not None
        for row, col in [(0, 0), (2, 3), (1, 2)]:
            values = rng.normal(size=(2, 5)).astype(np.float32)
            arrays["by_zarr"][row, col] = values
            writer.write_chunk((row, col, 0, 0), values[None, None])
            name = writer.chunk_file((row, col, 0, 0)).relative_to(tmp_path / f"by_writer_{dtype}")
            want = (tmp_path / f"by_zarr_{dtype}" / name).read_bytes()
            assert writer.chunk_file((row, col, 0, 0)).read_bytes() == want
        got = zarr.open_array(tmp_path / f"by_writer_{dtype}")[:]
        assert np.array_equal(got, arrays["by_zarr"][:], equal_nan=True)
        assert not list((tmp_path / f"by_writer_{dtype}").rglob("*.tmp"))  # renamed into place
        with pytest.raises(ValueError, match="outside the chunk grid"):
            writer.write_chunk((3, 0, 0, 0), np.zeros((1, 1, 2, 5)))
        with pytest.raises(ValueError, match="not \\(1, 1, 2, 5\\)"):
            writer.write_chunk((0, 0, 0, 0), np.zeros((1, 2, 5)))


def test_write_wells_falls_back_to_zarr_for_other_layouts(packed, tmp_path):
    # a store whose arrays another tool rewrote (sharded here) is still written right
    key = packed.plate_keys()[0]
    path = create_store(tmp_path, _info(packed), packed, [key])
    for name, width, dtype in (("logits", 5, "float32"), ("embeddings", 3, "float16")):
        zarr.create_array(path / key / name, shape=(8, 12, 2, width), chunks=(1, 1, 2, width),
                          shards=(8, 12, 2, width), dtype=dtype, fill_value=np.nan,
                          overwrite=True)  # fmt: skip
        assert ChunkWriter.open(path / key / name) is None
    wells, logits, _ = _fill(packed, path, key)
    stored = zarr.open_array(path / key / "logits")
    for i, (row, col) in enumerate(wells):
        assert np.array_equal(stored[row, col], logits[i])


def test_chunk_writer_stores_no_fill_value_chunk_as_zarr_does(tmp_path):
    arrays = {name: zarr.create_array(tmp_path / name, shape=(2, 2, 2, 3), chunks=(1, 1, 2, 3),
                                      dtype="float32", fill_value=np.nan)
              for name in ("by_zarr", "by_writer")}  # fmt: skip
    writer = ChunkWriter.open(tmp_path / "by_writer")
    for values in (np.ones((2, 3), np.float32), np.full((2, 3), np.nan, np.float32)):
        arrays["by_zarr"][1, 0] = values  # the second write deletes the chunk
        writer.write_chunk((1, 0, 0, 0), values[None, None])
        files = [sorted(p.relative_to(tmp_path / n) for p in (tmp_path / n).rglob("c/**/*")
                        if p.is_file()) for n in arrays]  # fmt: skip
        assert files[0] == files[1]
    assert not writer.chunk_file((1, 0, 0, 0)).exists()


def test_write_wells_falls_back_to_zarr_for_other_chunk_shapes(packed, tmp_path):
    key = packed.plate_keys()[0]
    path = create_store(tmp_path, _info(packed), packed, [key])
    for name, width, dtype in (("logits", 5, "float32"), ("embeddings", 3, "float16")):
        zarr.create_array(path / key / name, shape=(8, 12, 2, width), chunks=(1, 1, 1, width),
                          dtype=dtype, fill_value=np.nan, overwrite=True)  # fmt: skip
        assert ChunkWriter.open(path / key / name) is not None  # same codecs, other chunks
    wells, logits, _ = _fill(packed, path, key)
    stored = zarr.open_array(path / key / "logits")
    for i, (row, col) in enumerate(wells):
        assert np.array_equal(stored[row, col], logits[i])
