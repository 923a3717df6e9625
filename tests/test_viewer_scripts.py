"""view_data.py and view_batch.py as a user runs them: serving, errors, PNGs, montage."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cellblock.devservices.ports import listening_sockets
from cellblock.store.packed import PackedDataset
from cellblock.training.snapshots import Snapshot, write_snapshot
from cellblock.viewer.montage import CALL_COLORS, montage_image, plate_montage
from cellblock.viewer.overlay import load_calls
from cellblock.viewer.screenshot import CHROMIUM
from tests.conftest import ROOT, run_script

VIEW_DATA = ROOT / "01_data" / "view_data.py"
VIEW_BATCH = ROOT / "02_train" / "synthetic" / "tiny" / "view_batch.py"
PLATE = "HEPG2-01/Plate1"


def test_chromium_is_installed():
    """The rendering tests need it; `make test` installs it (scripts/apt_install.sh)."""
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} missing: run scripts/apt_install.sh browser"


def _wait_for_line(proc: subprocess.Popen, prefix: str, timeout: float = 60) -> str:
    """The first stdout line starting with ``prefix`` (fails with what was printed)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline and (proc.poll() is None or not lines.empty()):
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    proc.kill()
    raise AssertionError(f"no {prefix!r} line; stdout {seen}, stderr {proc.stderr.read()}")


def test_serves_on_loopback_by_default_until_ctrl_c(tiny_packed):
    proc = subprocess.Popen(
        [sys.executable, str(VIEW_DATA), "--data", str(tiny_packed), "--plate", PLATE],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        url = _wait_for_line(proc, "viewer URL:")
        assert url.startswith("http://127.0.0.1:")
        port = int(url.split(":")[2].split("/")[0])
        sockets = listening_sockets(proc.pid)
        assert sockets == [("127.0.0.1", port)], sockets  # nothing on 0.0.0.0 or ::
        with urllib.request.urlopen(url, timeout=30) as reply:  # the viewer page is served
            assert reply.status == 200 and b"neuroglancer" in reply.read().lower()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130, proc.stderr.read()  # cellblock.cli: interrupted
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_missing_plate_lists_the_available_ones(tiny_packed):
    r = run_script(VIEW_DATA, "--data", tiny_packed, "--plate", "HEPG2-01/Plate9")
    assert r.returncode == 1
    assert "no plate HEPG2-01/Plate9" in r.stderr
    assert "available: HEPG2-01/Plate1, HEPG2-01/Plate2" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_script(VIEW_DATA, "--data", tiny_packed, "--plate", "HEPG2-01")
    assert r.returncode == 1 and "expected EXPERIMENT/PlateN" in r.stderr


def test_port_in_use_is_a_clear_error(tiny_packed):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_script(VIEW_DATA, "--data", tiny_packed, "--plate", PLATE, "--port", port,
                       timeout=60)  # fmt: skip
    assert r.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in r.stderr
    assert "Traceback" not in r.stderr


def _submission(packed: PackedDataset, out: Path) -> pd.DataFrame:
    """An ensemble output for the plate: every other well wrong."""
    meta = packed.metadata
    wells = meta[(meta.experiment == "HEPG2-01") & (meta.plate == 1)].drop_duplicates("id_code")
    sirna = [int(s) if i % 2 else int(s) + 1 for i, s in enumerate(wells["sirna"])]
    table = pd.DataFrame({"id_code": wells["id_code"], "sirna": sirna})
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "submission.csv", index=False)
    return table


@pytest.mark.slow
def test_screenshot_and_montage_with_predictions(tiny_packed, tmp_path):
    """One run writes the headless screenshot and the montage, overlay included."""
    _submission(PackedDataset(tiny_packed), tmp_path / "ensemble")
    shot, montage = tmp_path / "plate.png", tmp_path / "montage.png"
    r = run_script(VIEW_DATA, "--data", tiny_packed, "--plate", PLATE, "--predictions",
                   tmp_path / "ensemble", "--screenshot", shot, "--montage", montage,
                   "--size", "800x500")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "HEPG2-01/Plate1: 3/7 wells correct (42.9%)" in r.stdout
    assert f"wrote {shot}" in r.stdout and f"wrote {montage}" in r.stdout
    pixels = np.asarray(Image.open(shot))[..., :3].astype(int)
    assert pixels.shape == (500, 800, 3)
    # the plate's data: many distinct colours; red (wrong) and green (correct) outlines
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500
    assert ((pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)).sum() > 50
    assert ((pixels[..., 1] > 200) & (pixels[..., 0] < 60) & (pixels[..., 2] < 80)).sum() > 50
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


@pytest.mark.slow
def test_montage_shows_the_plate(tiny_packed, tmp_path):
    packed = PackedDataset(tiny_packed)
    image, grid = montage_image(packed, "HEPG2-01", 1)
    assert image.dtype == np.uint8 and image.shape == (*grid.shape, 3)
    meta = packed.metadata
    imaged = meta[(meta.experiment == "HEPG2-01") & (meta.plate == 1)]
    wells = set(zip(imaged["row"], imaged["col"], strict=True))
    for row in range(grid.n_rows):
        for col in range(grid.n_cols):
            y0, x0, y1, x1 = grid.tile_box(row, col)
            tile = image[y0:y1, x0:x1].astype(float)
            if (row, col) in wells:
                assert tile.std() > 20, (row, col)
            else:
                assert tile.max() == 0, (row, col)

    _submission(packed, tmp_path / "ensemble")
    calls = load_calls(tmp_path / "ensemble", packed, "HEPG2-01", 1)
    out = plate_montage(packed, "HEPG2-01", 1, tmp_path / "m.png", calls=calls)
    png = np.asarray(Image.open(out))[..., :3].astype(int)
    assert png.shape[0] > grid.shape[0] and png.shape[1] > grid.shape[1]  # + labels, title
    for name in ("correct", "wrong"):
        rgb = [int(CALL_COLORS[name][i : i + 2], 16) for i in (1, 3, 5)]
        near = (np.abs(png - rgb).sum(axis=2) < 60).sum()
        assert near > 50, name  # the well outlines in that colour

    r = run_script(VIEW_DATA, "--data", tiny_packed, "--plate", PLATE, "--montage",
                   tmp_path / "cli.png")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cli.png").stat().st_size > 10_000
    assert "viewer URL" not in r.stdout  # --montage alone: no server, no browser


def _snapshot(run: Path) -> tuple[Path, Snapshot]:
    rng = np.random.default_rng(3)
    n, classes = 6, (3, 7, 11, 20)
    labels = np.array([0, 1, 2, 3, -1, 1])
    logits = rng.normal(size=(n, len(classes))).astype(np.float32)
    predicted = [0, 2, 2, 1, 3, 1]  # items 0, 2, 5 right; 1, 3 wrong; 4 unlabelled
    logits[np.arange(n), predicted] += 10
    snap = Snapshot(
        iteration=40, inputs=rng.normal(size=(n, 5, 16, 16)).astype(np.float32),
        labels=labels, logits=logits, id_code=tuple(f"HEPG2-01_1_B0{i + 2}" for i in range(n)),
        site=np.array([1, 2, 1, 2, 1, 2]), channels=(1, 2, 3, 5, 6), classes=classes,
        setup="synthetic/tiny",
    )  # fmt: skip
    return write_snapshot(run, snap), snap


def test_snapshot_items_in_viewer_state(tmp_path):
    import neuroglancer

    from cellblock.training.snapshots import read_snapshot
    from cellblock.viewer import server
    from cellblock.viewer.batch import show_snapshot

    path, _ = _snapshot(tmp_path / "run")
    server.start()
    viewer = neuroglancer.Viewer()
    grid = show_snapshot(viewer, read_snapshot(path))
    assert (grid.n_rows, grid.n_cols) == (2, 3)
    state = viewer.state.to_json()
    layers = {layer["name"]: layer for layer in state["layers"]}
    # channels 1,2,3,5,6 of RxRx1: their names, colours from DatasetInfo
    assert {"composite", "Hoechst", "ConA", "Phalloidin", "MitoTracker", "WGA"} <= set(layers)
    assert "Syto14" not in layers and '"#fa00fd"' in layers["MitoTracker"]["shader"]
    names = [p["id"] for p in layers["items"]["annotationProperties"]]
    items = {
        a["id"]: dict(zip(names, a["props"], strict=True)) for a in layers["items"]["annotations"]
    }
    assert [items[str(i)]["label"] for i in range(6)] == [3, 7, 11, 20, -1, 7]
    assert [items[str(i)]["predicted"] for i in range(6)] == [3, 11, 11, 7, 20, 7]
    assert [items[str(i)]["correct"] for i in range(6)] == [1, 0, 1, 0, 2, 1]
    assert [items[str(i)]["site"] for i in range(6)] == [1, 2, 1, 2, 1, 2]


@pytest.mark.slow
def test_view_batch_screenshot(tmp_path):
    path, _ = _snapshot(tmp_path / "run")
    shot = tmp_path / "batch.png"
    r = run_script(VIEW_BATCH, path, "--screenshot", shot, "--size", "600x400")
    assert r.returncode == 0, r.stderr
    assert "iteration 40, 6 items, 3/5 labelled items predicted right" in r.stdout
    pixels = np.asarray(Image.open(shot))[..., :3].astype(int)
    assert pixels.shape == (400, 600, 3)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 300  # the random inputs
    assert ((pixels[..., 0] > 200) & (pixels[..., 1] < 60)).sum() > 20  # wrong items: red

    r = run_script(VIEW_BATCH, tmp_path / "nope.hdf", "--screenshot", shot)
    assert r.returncode == 1 and "no such snapshot" in r.stderr


def test_serve_puts_the_dataset_on_http_and_the_fields_in_neuroglancer(tiny_packed):
    """--serve: the folder over HTTP (CORS), a viewer whose sources are zarr3:// fields."""
    import json

    proc = subprocess.Popen(
        [sys.executable, str(VIEW_DATA), "--data", str(tiny_packed), "--plate", PLATE, "--serve"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line.strip())
            if line.startswith("viewer URL:"):
                break
        keys = ("dataset served", "neuroglancer state")
        found = {k: line.split(" at ", 1)[1].split()[0] for line in seen
                 for k in keys if line.startswith(k)}  # fmt: skip
        assert set(found) == {"dataset served", "neuroglancer state"}, seen
        base = found["dataset served"].rstrip("/")
        assert base.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(found["neuroglancer state"], timeout=30) as reply:
            state = json.loads(reply.read())
        sources = state["layers"][0]["source"]
        meta = PackedDataset(tiny_packed).metadata
        assert len(sources) == len(meta[(meta.experiment == "HEPG2-01") & (meta.plate == 1)])
        url = sources[0]["url"]
        assert url.startswith(f"zarr3://{base}/images.zarr/HEPG2-01/Plate1/"), url
        with urllib.request.urlopen(url.removeprefix("zarr3://") + "zarr.json", timeout=30) as r:
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            assert json.loads(r.read())["attributes"]["ome"]["multiscales"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_served_folder_answers_400_to_a_malformed_path_and_goes_on(tiny_packed):
    """``%00`` (a NUL byte) or a name too long: 400, no traceback, the server still serves."""
    import http.client
    from urllib.parse import urlsplit

    proc = subprocess.Popen(
        [sys.executable, str(VIEW_DATA), "--data", str(tiny_packed), "--plate", PLATE, "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        base = urlsplit(_wait_for_line(proc, "dataset served at ").split()[0])

        def get(path: str) -> int:
            conn = http.client.HTTPConnection(base.hostname, base.port, timeout=30)
            try:
                conn.request("GET", path)
                reply = conn.getresponse()
                reply.read()
                return reply.status
            finally:
                conn.close()

        good = "/images.zarr/zarr.json"
        for bad in ("/images.zarr/%00", "/images.zarr%00/zarr.json", "/" + "a" * 5000):
            assert get(bad) == 400, bad
            assert get(good) == 200, bad
        assert get("/images.zarr/nope.json") == 404
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        stderr = proc.stderr.read()
        assert "Traceback" not in stderr and "null byte" not in stderr, stderr[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
