"""Bad input to pack_zarr.py: a non-zero exit and one line naming the offending file."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cellblock.synth import write_dataset
from tests.conftest import ROOT, TINY, run_script

PLATE = "train/HEPG2-01/Plate2"


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("small") / "raw"
    write_dataset(TINY, out, experiments=["HEPG2-01"], progress=False)
    return out


def _a_site(raw):
    """An image file of a listed well of PLATE, e.g. (.../B05_s1_w3.png, 'B05')."""
    path = sorted((raw / PLATE).glob("*_s1_w3.png"))[0]
    return path, path.name.split("_")[0]


def _missing_channel(raw):
    path, _ = _a_site(raw)
    path.unlink()
    return path.name, "file not found"


def _wrong_size(raw):
    path, _ = _a_site(raw)
    Image.fromarray(np.zeros((30, 32), np.uint8)).save(path)
    return path.name, "image size 32x30, expected 32x32"


def _sixteen_bit(raw):
    path, _ = _a_site(raw)
    Image.fromarray(np.zeros((32, 32), np.uint16)).save(path)
    return path.name, "expected 8-bit grayscale"


def _rgb(raw):
    path, _ = _a_site(raw)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
    return path.name, "mode 'RGB'"


def _corrupt(raw):
    path, _ = _a_site(raw)
    path.write_bytes(b"this is not a PNG at all" * 10)
    return path.name, "corrupt or truncated PNG"


def _truncated(raw):
    path, _ = _a_site(raw)
    path.write_bytes(path.read_bytes()[:200])
    return path.name, "corrupt or truncated PNG"


def _well_outside_plate(raw):
    path, _ = _a_site(raw)
    shutil.copy(path, raw / PLATE / "H13_s1_w1.png")  # column 13 of a 12-column plate
    return "H13_s1_w1.png", "outside a 96-well plate"


def _extra_channel(raw):
    path, well = _a_site(raw)
    shutil.copy(path, raw / PLATE / f"{well}_s1_w7.png")
    return f"{well}_s1_w7.png", "unexpected channel w7"


@pytest.mark.parametrize(
    "damage",
    [
        _missing_channel,
        _wrong_size,
        _sixteen_bit,
        _rgb,
        _corrupt,
        _truncated,
        _well_outside_plate,
        _extra_channel,
    ],
)
def test_bad_input_is_named_and_plate_stays_incomplete(small_raw, tmp_path, damage):
    raw = tmp_path / "raw"
    shutil.copytree(small_raw, raw)
    name, message = damage(raw)
    out = tmp_path / "ds"
    result = run_script(ROOT / "01_data/pack_zarr.py", "--raw", raw, "--out", out, "--workers", "2")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and name in last and message in last, result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "metadata.parquet").exists()
    plate = out / "images.zarr" / "HEPG2-01" / "Plate2"
    if (plate / "zarr.json").exists():  # written last, once the plate is whole
        attrs = json.loads((plate / "zarr.json").read_text())["attributes"]
        assert not attrs.get("cellblock", {}).get("complete"), "damaged plate marked complete"


def test_missing_table_column_is_named(small_raw, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(small_raw, raw)
    text = (raw / "train_controls.csv").read_text().replace(",well_type", ",kind")
    (raw / "train_controls.csv").write_text(text)
    result = run_script(ROOT / "01_data/pack_zarr.py", "--raw", raw, "--out", tmp_path / "ds")
    assert result.returncode == 1
    assert "train_controls.csv: missing column(s) ['well_type']" in result.stderr


def test_unknown_experiment_lists_available(small_raw, tmp_path):
    result = run_script(
        ROOT / "01_data/pack_zarr.py",
        "--raw",
        small_raw,
        "--out",
        tmp_path / "ds",
        "--experiments",
        "HEPG2-07",
    )
    assert result.returncode == 1
    assert "unknown experiment(s) ['HEPG2-07']; available: ['HEPG2-01']" in result.stderr


def test_images_without_a_metadata_row_are_named_and_refused_with_strict(small_raw, tmp_path):
    """A well whose row is missing from train.csv, and 11 wells no table lists at all."""
    raw = tmp_path / "raw"
    shutil.copytree(small_raw, raw)
    table = (raw / "train.csv").read_text().splitlines(keepends=True)
    dropped = next(line for line in table if line.startswith("HEPG2-01_2_"))
    (raw / "train.csv").write_text("".join(line for line in table if line != dropped))
    wells = [dropped.split(",")[3]]
    for column in range(1, 12):  # row A: no table lists it
        wells.append(f"A{column:02d}")
        for path in (raw / PLATE).glob(f"{wells[0]}_s1_w*.png"):
            shutil.copy(path, raw / PLATE / path.name.replace(wells[0], wells[-1]))
    named = sorted(wells)
    summary = f"no row for {', '.join(named[:10])} and 2 more"
    pack = ROOT / "01_data/pack_zarr.py"
    result = run_script(pack, "--raw", raw, "--out", tmp_path / "ds", "--strict")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {raw / PLATE}: 78 image(s) of 13 site(s) not in the metadata ({summary}); "
        "add their rows, or pack without --strict to skip them"
    )
    assert not (tmp_path / "ds" / "metadata.parquet").exists()
    result = run_script(pack, "--raw", raw, "--out", tmp_path / "ds")
    assert result.returncode == 0, result.stderr
    warning = f"{raw / PLATE}: 78 image(s) of 13 site(s) not in the metadata ({summary}) were"
    assert f"{warning} ignored (--strict makes this an error)" in result.stderr
