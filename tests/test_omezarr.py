"""Packed plates are OME-Zarr 0.5 HCS plates that the field's own tools read.

ome-zarr-models validates every plate and field; ome-zarr-py (what napari's
napari-ome-zarr plugin runs) finds the plate, its wells and fields; plain zarr-python
reads a field's pixels equal to the PNGs, from a folder or a zipped plate.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v05.hcs import HCS
from ome_zarr_models.v05.image import Image
from ome_zarr_models.v05.plate import Plate
from zarr.storage import ZipStore

from cellblock.screen.plates import PlateFormat, site_path
from cellblock.store.omezarr import FieldCodec, array_json, group_json, plate_attrs, windows
from cellblock.store.pack import pack_dataset
from cellblock.store.packed import RXRX1_CHANNELS, PackedDataset
from cellblock.store.rawtree import read_png

# rxrx1-utils (rxrx/io.py) RGB_MAP, channels w1..w6
RXRX1_RGB = [
    (19, 0, 249),
    (42, 255, 31),
    (255, 0, 25),
    (45, 255, 252),
    (250, 0, 253),
    (254, 255, 40),
]


@pytest.fixture(scope="module")
def zipped(tiny_raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("zipped") / "dataset"
    pack_dataset(
        tiny_raw,
        out,
        experiments=["U2OS-01"],
        workers=2,
        progress=False,
        store="zip",
        pixel_size_um=0.65,
    )
    return out


def _group(ds: PackedDataset, key: str) -> zarr.Group:
    path = ds.plate_path(*key.split("/Plate"))
    return zarr.open_group(ZipStore(path, mode="r") if path.suffix == ".ozx" else path, mode="r")


@pytest.mark.parametrize("which", [pytest.param("directory", marks=pytest.mark.slow), "zip"])
def test_every_plate_validates_as_an_hcs_plate_and_its_fields_as_images(tiny_packed, zipped, which):
    ds = PackedDataset(tiny_packed if which == "directory" else zipped)
    meta = ds.metadata
    for key in ds.plate_keys():
        exp, plate = key.split("/Plate")
        sites = meta[(meta.experiment == exp) & (meta.plate == int(plate))]
        group = _group(ds, key)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a ValidationWarning is a failure too
            hcs = HCS.from_zarr(group)
        wells = list(hcs.well_groups)
        assert len(wells) == hcs.n_wells == sites.groupby(["row", "col"]).ngroups, key
        assert sum(len(w.ome_attributes.well.images) for w in wells) == len(sites)
        plate_meta = hcs.ome_attributes.plate
        assert plate_meta.field_count == 2 and plate_meta.acquisitions[0].maximumfieldcount == 2
        assert [r.name for r in plate_meta.rows] == list("ABCDEFGH")
        assert [c.name for c in plate_meta.columns] == [f"{c:02d}" for c in range(1, 13)]
        images = [
            Image(attributes=f.attributes, members=f.members)  # validates each field
            for w in wells
            for f in w.members.values()
        ]
        assert len(images) == len(sites)
    (multiscale,) = images[0].ome_attributes.multiscales
    assert [a.name for a in multiscale.axes] == ["c", "y", "x"]
    assert [a.type for a in multiscale.axes] == ["channel", "space", "space"]


def test_ome_zarr_py_reader_finds_the_plate_its_wells_and_fields(tiny_packed):
    ds = PackedDataset(tiny_packed)
    meta = ds.metadata
    sites = meta[(meta.experiment == "HEPG2-02") & (meta.plate == 3)]
    path = ds.plate_path("HEPG2-02", 3)
    (node,) = list(Reader(parse_url(str(path)))())
    (plate,) = [s for s in node.specs if type(s).__name__ == "Plate"]
    assert plate.row_names == list("ABCDEFGH") and plate.col_names[0] == "01"
    want = sorted({f"{w[0]}/{w[1:]}" for w in sites.well})
    assert sorted(plate.well_paths) == want
    assert node.data[0].shape[0] == 6  # the stitched plate overview napari shows
    for well_path in want:
        (well,) = list(Reader(parse_url(str(path / well_path)))())
        assert [type(s).__name__ for s in well.specs] == ["Well"]
        n_fields = int((sites.well == well_path.replace("/", "")).sum())
        assert len(well.specs[0].lookup("well", {})["images"]) == n_fields
    (field,) = list(Reader(parse_url(str(path / want[0] / "0")))())
    assert {type(s).__name__ for s in field.specs} == {"Multiscales", "OMERO"}
    assert [d.shape for d in field.data] == [(6, 32, 32), (6, 8, 8), (6, 2, 2)]
    assert field.metadata["channel_names"] == list(RXRX1_CHANNELS)


@pytest.mark.parametrize("which", ["directory", "zip"])
def test_plain_zarr_python_reads_field_pixels_equal_to_the_pngs(
    tiny_raw, tiny_packed, zipped, which
):
    ds = PackedDataset(tiny_packed if which == "directory" else zipped)
    meta = ds.metadata[ds.metadata.experiment == "U2OS-01"]
    rng = np.random.default_rng(1)
    for i in rng.choice(len(meta), size=8, replace=False):
        s = meta.iloc[i]
        group = _group(ds, f"{s.experiment}/Plate{s.plate}")
        got = group[f"{s.well[0]}/{s.well[1:]}/{s.site - 1}/0"][:]
        want = np.stack(
            [
                read_png(
                    tiny_raw
                    / site_path("kaggle", s.split, s.experiment, s.plate, s.well, s.site, channel=c)
                )
                for c in range(1, 7)
            ]
        )
        np.testing.assert_array_equal(got, want)


def test_channels_colours_windows_and_units_in_the_field_metadata(zipped):
    ds = PackedDataset(zipped)
    omero = ds.omero("U2OS-01", 2)
    labels = [c["label"] for c in omero["channels"]]
    assert labels == list(RXRX1_CHANNELS)
    rgb = [tuple(int(c["color"][i : i + 2], 16) for i in (0, 2, 4)) for c in omero["channels"]]
    assert rgb == RXRX1_RGB
    info = ds.plate_info("U2OS-01", 2)
    want = windows(info.stats, 6)
    assert [(c["window"]["start"], c["window"]["end"]) for c in omero["channels"]] == want
    mean, std = info.channel_stats("all")
    assert want[1][0] == pytest.approx(max(0, mean[1] - std[1] / 2), abs=1e-3)
    group = _group(ds, "U2OS-01/Plate2")
    first = json.loads(json.dumps(group.attrs["ome"]["plate"]["wells"][0]))["path"]
    (ms,) = group[f"{first}/0"].attrs["ome"]["multiscales"]
    assert [a.get("unit") for a in ms["axes"]] == [None, "micrometer", "micrometer"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales == [[1.0, 0.65, 0.65], [1.0, 2.6, 2.6], [1.0, 10.4, 10.4]]
    assert ds.plate_info("U2OS-01", 2).complete  # normalization statistics are in the attrs
    assert set(group.attrs["cellblock"]["stats"]) == {"all", "negative_control"}


def test_metadata_files_are_what_zarr_python_writes(tmp_path):
    codec = FieldCodec(level=16)
    array = zarr.create_array(
        tmp_path / "a",
        shape=(6, 40, 24),
        chunks=(6, 40, 24),
        dtype="uint8",
        fill_value=0,
        compressors=(zarr.codecs.ZstdCodec(level=16), zarr.codecs.Crc32cCodec()),
        dimension_names=("c", "y", "x"),
    )
    pixels = np.random.default_rng(0).integers(0, 60, (6, 40, 24), dtype=np.uint8)
    array[:] = pixels
    assert (tmp_path / "a" / "zarr.json").read_bytes() == array_json((6, 40, 24), codec)
    assert (tmp_path / "a" / "c" / "0" / "0" / "0").read_bytes() == codec.encode(pixels)
    group = zarr.open_group(tmp_path / "g", mode="w")
    group.attrs.update({"ome": {"version": "0.5"}, "x": [1.5, 2]})
    assert (tmp_path / "g" / "zarr.json").read_bytes() == group_json(dict(group.attrs))


@pytest.mark.parametrize("n_wells", [96, 384, 1536])
def test_plate_metadata_of_every_plate_format_is_valid(n_wells):
    fmt = PlateFormat.from_n_wells(n_wells)
    wells = [(0, 0), (fmt.n_rows - 1, fmt.n_cols - 1), (1, 1)]
    attrs = plate_attrs(fmt, "X-01/Plate1", wells, 4)
    plate = Plate.model_validate(attrs["plate"])
    assert len(plate.rows) == fmt.n_rows and len(plate.columns) == fmt.n_cols
    last = fmt.well_name(fmt.n_rows - 1, fmt.n_cols - 1)
    assert f"{last[:-2]}/{last[-2:]}" in [w.path for w in plate.wells]  # e.g. AF/48


def test_a_1536_well_plate_of_odd_sized_sites_packs_and_validates(tmp_path):
    from cellblock.synth import write_dataset
    from tests.conftest import TINY

    raw = tmp_path / "raw"
    write_dataset(TINY.replace(plate_wells=1536, image_size=40), raw, experiments=["RPE-01"],
                  progress=False)  # fmt: skip
    out = tmp_path / "ds"
    summary = pack_dataset(raw, out, verify=True, progress=False)  # pixels == PNGs, checked
    assert summary["plate_wells"] == 1536 and summary["sites_verified"] == summary["sites"]
    ds = PackedDataset(out)
    group = _group(ds, "RPE-01/Plate1")
    hcs = HCS.from_zarr(group)
    assert (
        len(hcs.ome_attributes.plate.rows) == 32 and hcs.ome_attributes.plate.rows[-1].name == "AF"
    )
    s = ds.metadata.iloc[0]
    field = group[f"{s.well[:-2]}/{s.well[-2:]}/{s.site - 1}"]
    assert [field[str(i)].shape for i in range(3)] == [(6, 40, 40), (6, 10, 10), (6, 3, 3)]
