"""The plate viewer, rendered for real: neuroglancer in headless Debian chromium.

Screen positions are computed from the viewer state (position, crossSectionScale) and
the mosaic geometry, so each test knows where a well must appear and what colour.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import pandas as pd
import pytest

from cellblock.errors import UserError
from cellblock.store.packed import PackedDataset
from cellblock.store.predictions import PredictionInfo, create_store, write_wells
from cellblock.viewer import server
from cellblock.viewer.display import composite_rgb, plate_displays
from cellblock.viewer.layers import annotation_table
from cellblock.viewer.mosaic import PlateMosaic, TileGrid, tile_images
from cellblock.viewer.overlay import load_calls, summarize_calls
from cellblock.viewer.plate import parse_plate, show_plate
from cellblock.viewer.screenshot import Browser
from cellblock.viewer.volume import MosaicVolume

SIZE = (640, 400)
EXPERIMENT, PLATE = "HEPG2-01", 1


@pytest.fixture(scope="module")
def browser():
    """One headless chromium for the module (chromium is a hard requirement: no skip)."""
    server.start()
    with Browser(SIZE, timeout=90) as b:
        yield b


@pytest.fixture(scope="module")
def packed(tiny_packed) -> PackedDataset:
    return PackedDataset(tiny_packed)


def _viewer():
    import neuroglancer

    server.start()
    return neuroglancer.Viewer()


def _to_screen(state, x: float, y: float, size=SIZE) -> tuple[float, float]:
    """Data (x, y) -> screen (column, row), as neuroglancer's xy panel maps them."""
    px, py = state.position
    scale = state.cross_section_scale
    return (x - px) / scale + size[0] / 2, (y - py) / scale + size[1] / 2


def _well_pixels(image, state, grid: TileGrid, row: int, col: int, inset: float = 0.2):
    """The screen pixels inside well (row, col), ``inset`` of its size away from its edges."""
    y0, x0, y1, x1 = grid.tile_box(row, col)
    dy, dx = (y1 - y0) * inset, (x1 - x0) * inset
    c0, r0 = _to_screen(state, x0 + dx, y0 + dy)
    c1, r1 = _to_screen(state, x1 - dx, y1 - dy)
    return image[int(np.ceil(r0)) : int(r1), int(np.ceil(c0)) : int(c1), :3].astype(float)


def _hide_all_but(viewer, *names: str) -> None:
    with viewer.txn() as s:
        for layer in s.layers:
            layer.visible = layer.name in names


# ---------------------------------------------------------------- geometry (pure logic)


@pytest.mark.parametrize("wells,size,sites", [(96, 32, 2), (384, 512, 2), (1536, 64, 4)])
def test_tile_grid_places_every_site_once(wells, size, sites):
    from cellblock.screen.plates import PlateFormat

    fmt = PlateFormat.from_n_wells(wells)
    grid = TileGrid.for_plate((fmt.n_rows, fmt.n_cols, sites, 6, size, size))
    height, width = grid.shape
    assert height == fmt.n_rows * (size + grid.gap) + grid.gap
    boxes = []
    for r in range(fmt.n_rows):
        for c in range(fmt.n_cols):
            for s in range(1, sites + 1):
                y, x = grid.site_origin(r, c, s)
                assert y > 0 and x > 0 and y + size < height and x + size < width
                boxes.append((y, x))
    assert len(set(boxes)) == len(boxes)  # no two sites share a place
    # sites_in finds exactly the sites that overlap a box (brute force on a few boxes)
    rng = np.random.default_rng(0)
    for _ in range(20):
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        y1, x1 = y0 + rng.integers(1, 3 * size), x0 + rng.integers(1, 3 * size)
        found = set(grid.sites_in(y0, y1, x0, x1))
        expect = set()
        for r in range(fmt.n_rows):
            for c in range(fmt.n_cols):
                for s in range(1, sites + 1):
                    y, x = grid.site_origin(r, c, s)
                    if y < y1 and y + size > y0 and x < x1 and x + size > x0:
                        expect.add((r, c, s))
        assert found == expect


def test_plate_mosaic_slices_equal_the_sites(packed):
    mosaic = PlateMosaic(packed, EXPERIMENT, PLATE)
    full = mosaic[:, :, :]
    assert full.shape == mosaic.shape and full.dtype == np.uint8
    grid, h, w = mosaic.grid, mosaic.grid.height, mosaic.grid.width
    expect = np.zeros_like(full)
    for row in mosaic.sites.itertuples():
        y, x = grid.site_origin(row.row, row.col, row.site)
        expect[:, y : y + h, x : x + w] = packed.read_site(
            EXPERIMENT, PLATE, row.row, row.col, row.site
        )
    np.testing.assert_array_equal(full, expect)
    assert full.any()
    # any sub-block (as neuroglancer's chunk requests slice it) is the same pixels
    np.testing.assert_array_equal(mosaic[2:5, 10:130, 50:333], expect[2:5, 10:130, 50:333])
    assert len(mosaic.imaged) == len(mosaic.sites) == 14  # 7 wells x 2 sites


def _decode_npz(data: bytes, shape) -> np.ndarray:
    return np.load(io.BytesIO(zlib.decompress(data))).reshape(shape, order="F")


def test_mosaic_volume_downsamples_like_local_volume(packed):
    """Zoomed-out chunks from per-site averages equal LocalVolume's own (within 1 px)."""
    import neuroglancer

    mosaic = PlateMosaic(packed, EXPERIMENT, PLATE)
    dims = neuroglancer.CoordinateSpace(names=["c^", "y", "x"], units="", scales=[1, 1, 1])
    fast = MosaicVolume(mosaic, dimensions=dims, volume_type="image", max_downsampling=4096)
    slow = neuroglancer.LocalVolume(mosaic, dimensions=dims, volume_type="image",
                                    max_downsampling=4096)  # fmt: skip
    for factor in ([1, 2, 2], [1, 8, 8], [1, 1, 1]):
        shape = np.ceil(np.asarray(mosaic.shape) / factor).astype(int)
        key = ",".join(map(str, factor))
        for start, end in [((0, 0, 0), shape), ((1, 3, 17), (4, shape[1] - 5, shape[2] // 2))]:
            start, end = np.asarray(start), np.asarray(end)
            a = _decode_npz(fast.get_encoded_subvolume("npz", start, end, key)[0], end - start)
            b = _decode_npz(slow.get_encoded_subvolume("npz", start, end, key)[0], end - start)
            assert a.shape == b.shape == tuple(end - start)
            if factor[1] <= 2:  # sites start on block boundaries: exact
                np.testing.assert_array_equal(a, b)
            else:  # a site may sit one output pixel off: close, not equal
                assert np.abs(a.astype(int) - b).mean() < 3 and a.any()
    with pytest.raises(ValueError):
        fast.get_encoded_subvolume("npz", np.zeros(3, int), np.asarray(mosaic.shape), "1,2,2")


def test_tile_images_keeps_gaps_at_the_fill_value():
    images = np.random.default_rng(0).normal(size=(5, 2, 8, 8)).astype(np.float32)
    mosaic, grid = tile_images(images, fill=[-3.0, -4.0])
    assert (grid.n_rows, grid.n_cols) == (2, 3)
    for i in range(5):
        y, x = grid.tile_origin(*divmod(i, 3))
        np.testing.assert_array_equal(mosaic[:, y : y + 8, x : x + 8], images[i])
    y, x = grid.tile_origin(1, 2)  # the sixth tile is empty
    assert (mosaic[0, y : y + 8, x : x + 8] == -3).all() and (mosaic[1, :2] == -4).all()


def test_parse_plate():
    assert parse_plate("HEPG2-01/Plate3") == ("HEPG2-01", 3)
    with pytest.raises(UserError, match="EXPERIMENT/PlateN"):
        parse_plate("HEPG2-01")


# ---------------------------------------------------------------- rendering


@pytest.mark.slow
def test_plate_screenshot_shows_the_wells_in_plate_layout(packed, browser, tmp_path):
    viewer = _viewer()
    mosaic = show_plate(viewer, packed, EXPERIMENT, PLATE, viewport=SIZE)
    grid = mosaic.grid
    _hide_all_but(viewer, "composite")  # the wells' outlines would count as "data"
    image = browser.capture(viewer, tmp_path / "plate.png")
    assert (tmp_path / "plate.png").stat().st_size > 1000
    assert image.shape == (SIZE[1], SIZE[0], 4)
    state = viewer.state
    imaged = {(r, c) for r, c, _ in mosaic.imaged}
    assert len(imaged) == 7
    for row in range(grid.n_rows):
        for col in range(grid.n_cols):
            pixels = _well_pixels(image, state, grid, row, col)
            if (row, col) in imaged:  # cells: bright, varied pixels
                assert pixels.std() > 20 and pixels.mean() > 20, (row, col)
            else:  # an unimaged well of the plate: black
                assert pixels.max() == 0, (row, col)
    # outside the plate: the background colour (#202020), not data
    assert (image[2, 2, :3] == 0x20).all()

    # a physical pixel size changes the units (scale bar), not where anything is drawn
    show_plate(viewer, packed, EXPERIMENT, PLATE, viewport=SIZE, pixel_size_um=0.65)
    dims = viewer.state.to_json()["dimensions"]
    assert dims == {"x": [6.5e-07, "m"], "y": [6.5e-07, "m"]}
    _hide_all_but(viewer, "composite")
    microns = browser.capture(viewer)
    bar = np.zeros(image.shape[:2], bool)
    bar[-60:, :160] = True  # the scale bar's corner
    assert (microns[~bar] == image[~bar]).mean() > 0.99


@pytest.mark.slow
def test_colours_are_rxrx1_composite_and_channel_colours(packed, browser):
    """Zoomed onto one site: the composite equals display.composite_rgb; one stain is its colour."""
    viewer = _viewer()
    mosaic = show_plate(viewer, packed, EXPERIMENT, PLATE, viewport=SIZE)
    site = mosaic.sites.iloc[0]
    y, x = mosaic.grid.site_origin(site.row, site.col, site.site)
    zoom = 4  # screen pixels per image pixel
    size = (mosaic.grid.width * zoom, mosaic.grid.height * zoom)
    with viewer.txn() as s:
        s.position = [x + mosaic.grid.width / 2, y + mosaic.grid.height / 2]
        s.cross_section_scale = 1 / zoom
        s.show_scale_bar = False  # it would cover a corner of the site
    _hide_all_but(viewer, "composite")
    shot = browser.capture(viewer, size=size)[..., :3].astype(float)
    raw = packed.read_site(EXPERIMENT, PLATE, int(site.row), int(site.col), int(site.site))
    displays = plate_displays(packed.info, packed.plate_info(EXPERIMENT, PLATE))
    expect = composite_rgb(raw, displays) * 255
    expect = np.repeat(np.repeat(expect, zoom, 0), zoom, 1)
    assert shot.std() > 20
    assert np.abs(shot - expect).mean() < 12  # same colours, up to sub-pixel placement

    _hide_all_but(viewer, "Phalloidin")  # #ff0019: red, a trace of blue, no green
    red = browser.capture(viewer, size=size)[..., :3].astype(float)
    r, g, b = red[..., 0], red[..., 1], red[..., 2]
    d = displays[2]
    level = np.clip((raw[2].astype(float) - d.low) / (d.high - d.low), 0, 1) * 255
    level = np.repeat(np.repeat(level, zoom, 0), zoom, 1)
    assert r.std() > 20 and np.abs(r - level).mean() < 12
    assert g.max() <= 2 and np.abs(b - r * 0x19 / 0xFF).max() <= 3


# ---------------------------------------------------------------- prediction overlay


def _plate_wells(packed):
    meta = packed.metadata
    sites = meta[(meta["experiment"] == EXPERIMENT) & (meta["plate"] == PLATE)]
    return sites.groupby(["row", "col"], as_index=False).first()


def _write_store(packed, pred) -> dict[str, tuple[int, int, str]]:
    """A predictions store for the plate: every third well wrong. Returns well -> expected.

    Site 1 says the call firmly, site 2 leans to a decoy: the call survives only if
    the sites are averaged (not if one site decides).
    """
    classes = tuple(int(c) for c in sorted(packed.metadata["sirna"].dropna().unique()))
    info = PredictionInfo(
        setup="synthetic/tiny", run="test", iteration=1, classes=classes, tta="none",
        channels=(1, 2, 3, 4, 5, 6), embedding_dim=4, dataset=str(packed.path),
        code_version="test",
    )  # fmt: skip
    key = f"{EXPERIMENT}/Plate{PLATE}"
    path = create_store(pred, info, packed, [key])
    wells = _plate_wells(packed)
    n, sites = len(classes), packed.info.n_sites
    logits = np.zeros((len(wells), sites, n), np.float32)
    expected = {}
    for i, well in enumerate(wells.itertuples()):
        true = int(well.sirna)
        call = true if i % 3 else classes[(classes.index(true) + 1) % n]
        decoy = classes[(classes.index(call) + 2) % n]
        logits[i, 0, classes.index(call)] = 5.0
        logits[i, 1, classes.index(decoy)] = 2.0
        expected[well.well] = (call, true, "correct" if call == true else "wrong")
    write_wells(path, key, list(zip(wells["row"], wells["col"], strict=True)), logits,
                np.zeros((len(wells), sites, 4), np.float32))  # fmt: skip
    return expected


def _layer_values(viewer, name: str) -> dict[str, dict]:
    """Per-annotation properties of a layer, read from the viewer's JSON state."""
    layer = next(x for x in viewer.state.to_json()["layers"] if x["name"] == name)
    names = [p["id"] for p in layer["annotationProperties"]]
    return {a["id"]: dict(zip(names, a["props"], strict=True)) for a in layer["annotations"]}


@pytest.mark.slow
def test_prediction_overlay_values_in_state_and_colours_on_screen(packed, browser, tmp_path):
    expected = _write_store(packed, tmp_path / "pred")
    assert {e[2] for e in expected.values()} == {"correct", "wrong"}
    calls = load_calls(tmp_path / "pred", packed, EXPERIMENT, PLATE)
    assert summarize_calls(calls).startswith(
        f"{sum(e[2] == 'correct' for e in expected.values())}/{len(expected)} wells correct"
    )
    viewer = _viewer()
    mosaic = show_plate(viewer, packed, EXPERIMENT, PLATE, calls=calls, viewport=SIZE)

    values = _layer_values(viewer, "predictions")
    codes = {"wrong": 0, "correct": 1, "unknown": 2}
    assert set(values) == set(expected)
    for well, (call, true, correct) in expected.items():
        v = values[well]
        assert (v["predicted"], v["true"], v["correct"]) == (call, true, codes[correct]), well
        assert 0.4 < v["confidence"] < 0.6  # mean over the two sites of the softmax
    table = annotation_table(viewer.state.layers["predictions"])
    assert (
        table.set_index("id")
        .loc[next(iter(expected)), "description"]
        .startswith(next(iter(expected)))
    )

    _hide_all_but(viewer, "predictions")  # boxes, outlined and tinted
    image = browser.capture(viewer, tmp_path / "overlay.png")
    where = calls.set_index("well")
    for well, (_, _, correct) in expected.items():
        row, col = int(where.loc[well, "row"]), int(where.loc[well, "col"])
        r, g, b = _well_pixels(image, viewer.state, mosaic.grid, row, col).mean((0, 1))
        # tint (0.1, 0.95, 0.2) or (1.0, 0.1, 0.1) at alpha 0.25 over the #202020 background
        if correct == "correct":
            assert g - max(r, b) > 30, (well, r, g, b)
        else:
            assert r - max(g, b) > 30, (well, r, g, b)


def test_ensemble_submission_overlay(packed, tmp_path):
    wells = _plate_wells(packed)
    out = tmp_path / "ensemble"
    out.mkdir()
    rows = []
    for i, well in enumerate(wells.itertuples()):
        rows.append((well.id_code, int(well.sirna) if i % 2 else int(well.sirna) + 1000))
    rows.append(("HEPG2-01_2_B02", 5))  # another plate: ignored
    pd.DataFrame(rows, columns=["id_code", "sirna"]).to_csv(out / "submission.csv", index=False)
    calls = load_calls(out, packed, EXPERIMENT, PLATE)
    assert len(calls) == len(wells)
    by_well = calls.set_index("well")
    for i, well in enumerate(wells.itertuples()):
        assert by_well.loc[well.well, "predicted"] == (well.sirna if i % 2 else well.sirna + 1000)
        assert by_well.loc[well.well, "true"] == well.sirna
        assert by_well.loc[well.well, "correct"] == ("correct" if i % 2 else "wrong")
    viewer = _viewer()
    show_plate(viewer, packed, EXPERIMENT, PLATE, calls=calls, viewport=SIZE)
    values = _layer_values(viewer, "predictions")
    assert {w: v["correct"] for w, v in values.items()} == {
        w: (0 if c == "wrong" else 1) for w, c in zip(calls["well"], calls["correct"], strict=True)
    }
    assert all("confidence" not in v for v in values.values())  # a submission has none


def test_overlay_sources_errors(packed, tmp_path):
    with pytest.raises(UserError, match="neither a predictions store"):
        load_calls(tmp_path, packed, EXPERIMENT, PLATE)
    bad = tmp_path / "submission.csv"
    bad.write_text("id,label\nx,1\n")
    with pytest.raises(UserError, match=r"column\(s\) \['id_code', 'sirna'\] missing"):
        load_calls(bad, packed, EXPERIMENT, PLATE)
    bad.write_text("id_code,sirna\nU2OS-09_1_B02,1\n")
    with pytest.raises(UserError, match="no wells of plate HEPG2-01/Plate1"):
        load_calls(bad, packed, EXPERIMENT, PLATE)
    _write_store(packed, tmp_path / "pred")
    with pytest.raises(UserError, match="no predictions for plate HEPG2-01/Plate2"):
        load_calls(tmp_path / "pred", packed, EXPERIMENT, 2)


# ---------------------------------------------------------------- OME-Zarr through zarr3://


def test_data_server_answers_cors_range_and_nothing_outside(tiny_packed, tmp_path):
    import urllib.error
    import urllib.request

    from cellblock.viewer.dataserver import DataServer

    (tmp_path / "secret").write_text("not served")
    data = DataServer(tiny_packed).start()
    try:
        url = f"{data.url}/images.zarr/zarr.json"
        whole = (tiny_packed / "images.zarr" / "zarr.json").read_bytes()
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and r.read() == whole
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            assert r.headers["Accept-Ranges"] == "bytes"
        for header, want, span in (("bytes=2-9", whole[2:10], "2-9"),
                                   ("bytes=-5", whole[-5:], f"{len(whole) - 5}-{len(whole) - 1}"),
                                   ("bytes=10-", whole[10:], f"10-{len(whole) - 1}")):  # fmt: skip
            req = urllib.request.Request(url, headers={"Range": header})
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 206 and r.read() == want, header
                assert r.headers["Content-Range"] == f"bytes {span}/{len(whole)}"
        req = urllib.request.Request(url, method="OPTIONS", headers={
            "Origin": "http://x", "Access-Control-Request-Headers": "range"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 204 and "Range" in r.headers["Access-Control-Allow-Headers"]
        for bad in ("/../secret", "/images.zarr", "/nope.json", "/%2e%2e/secret"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(data.url + bad, timeout=10)
            assert err.value.code == 404, bad
    finally:
        data.stop()


@pytest.fixture(scope="module")
def zipped(tiny_raw, tmp_path_factory) -> PackedDataset:
    from cellblock.store.pack import pack_dataset

    out = tmp_path_factory.mktemp("zipped") / "dataset"
    pack_dataset(tiny_raw, out, experiments=[EXPERIMENT], progress=False, store="zip")
    return PackedDataset(out)


@pytest.mark.parametrize("store", ["directory", "zip"])
def test_served_zarr3_field_shows_the_cells_in_their_colours(packed, zipped, browser, store):
    """neuroglancer's own zarr3:// source, over HTTP: the composite in the OME colours."""
    from cellblock.viewer.dataserver import DataServer
    from cellblock.viewer.fields import show_fields

    ds = packed if store == "directory" else zipped
    site = ds.metadata[(ds.metadata.experiment == EXPERIMENT) & (ds.metadata.plate == PLATE)]
    site = site.iloc[0]
    data = DataServer(ds.path).start()
    try:
        viewer = _viewer()
        displays = show_fields(viewer, ds, EXPERIMENT, PLATE, data.url, wells=[site.well])
        sources = viewer.state.layers["fields"].source
        assert len(sources) == 2 and all(data.url in s.url and "zarr3:" in s.url for s in sources)
        grid = TileGrid.for_plate(ds.info.plate_shape)
        y, x = grid.site_origin(int(site.row), int(site.col), int(site.site))
        zoom = 4
        size = (grid.width * zoom, grid.height * zoom)
        with viewer.txn() as s:
            s.position = [x + grid.width / 2, y + grid.height / 2]
            s.cross_section_scale = 1 / zoom
            s.show_scale_bar = False
        shot = browser.capture(viewer, size=size)[..., :3].astype(float)
    finally:
        data.stop()
    omero = ds.omero(EXPERIMENT, PLATE)
    assert [d.name for d in displays] == [c["label"] for c in omero["channels"]]
    assert [d.color.lstrip("#").upper() for d in displays] == [
        c["color"] for c in omero["channels"]
    ]
    raw = ds.read_site(EXPERIMENT, PLATE, int(site.row), int(site.col), int(site.site))
    expect = np.repeat(np.repeat(composite_rgb(raw, displays) * 255, zoom, 0), zoom, 1)
    assert shot.std() > 20
    assert np.abs(shot - expect).mean() < 12  # the cells, in RxRx1's colours, in place
