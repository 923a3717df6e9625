import numpy as np
import pandas as pd
import pytest

from cellblock.screen.metadata import (
    SITE_COLUMNS,
    MetadataError,
    detect_layout,
    load_kaggle,
    load_raw_metadata,
    load_v1,
    plate_groups,
)
from cellblock.synth import Design, write_dataset
from tests.conftest import TINY


def test_site_table_from_kaggle_tables(tiny_raw):
    table = load_kaggle(tiny_raw)
    assert list(table.columns) == SITE_COLUMNS
    wells = pd.concat(
        pd.read_csv(tiny_raw / n)
        for n in ["train.csv", "test.csv", "train_controls.csv", "test_controls.csv"]
    )
    assert len(table) == 2 * len(wells)  # two sites per well
    assert set(table.site) == {1, 2}
    row = table[table.id_code == wells.id_code.iloc[0]].iloc[0]
    assert (row.row, row.col) == (ord(row.well[0]) - ord("A"), int(row.well[1:]) - 1)
    assert set(table.cell_type) == {"HEPG2", "HUVEC", "RPE", "U2OS"}
    assert table[table.split == "train"].sirna.notna().all()
    # test_labels.csv (the answer key) fills the test treatments' labels
    assert table[table.split == "test"].sirna.notna().all()
    assert str(table.sirna.dtype) == "Int64"


def test_v1_layout_gives_the_same_table(tmp_path, tiny_raw):
    v1 = tmp_path / "v1"
    write_dataset(TINY, v1, layout="v1", experiments=["HEPG2-01", "HEPG2-02"], progress=False)
    assert detect_layout(v1) == "v1" and detect_layout(tiny_raw) == "kaggle"
    assert (v1 / "images" / "HEPG2-01" / "Plate1").is_dir()
    from_v1 = load_v1(v1)
    from_kaggle = load_kaggle(tiny_raw)
    from_kaggle = from_kaggle[from_kaggle.experiment.str.startswith("HEPG2")].reset_index(drop=True)
    pd.testing.assert_frame_equal(from_v1, from_kaggle)


def test_plate_groups_recover_the_design(tiny_raw):
    groups = plate_groups(load_kaggle(tiny_raw))
    design = Design(TINY)
    assert sorted(groups, key=min) == sorted(
        (frozenset(g.tolist()) for g in design.groups), key=min
    )


@pytest.mark.parametrize(
    ("file", "edit", "message"),
    [
        (
            "train.csv",
            lambda df: df.drop(columns="sirna"),
            r"train.csv: missing column\(s\) \['sirna'\]",
        ),
        ("test.csv", lambda df: df.assign(well=df.well.where(df.index > 0, "Z99")), "Z99"),
        ("train_controls.csv", lambda df: df.assign(well_type="control"), "unknown well_type"),
        (
            "train.csv",
            lambda df: df.assign(id_code=df.id_code.str.replace("_1_", "_9_")),
            "does not match",
        ),
        ("test.csv", lambda df: pd.concat([df, df.head(1)]), "more than once"),
    ],
)
def test_bad_tables_are_named(tmp_path, tiny_raw, file, edit, message):
    for name in ["train.csv", "test.csv", "train_controls.csv", "test_controls.csv"]:
        df = pd.read_csv(tiny_raw / name)
        (edit(df) if name == file else df).to_csv(tmp_path / name, index=False)
    with pytest.raises(MetadataError, match=message):
        load_raw_metadata(tmp_path)


def test_not_a_raw_tree(tmp_path):
    with pytest.raises(MetadataError, match="not an RxRx1 tree"):
        detect_layout(tmp_path)


def test_pixel_stats_match_the_images(tiny_raw):
    from PIL import Image

    from cellblock.screen.metadata import load_pixel_stats

    stats = load_pixel_stats(tiny_raw)
    assert len(stats) == len(load_kaggle(tiny_raw)) * 6
    row = stats.iloc[17]
    split = "train" if (tiny_raw / "train" / row.experiment).is_dir() else "test"
    png = (
        tiny_raw
        / split
        / row.experiment
        / f"Plate{row.plate}"
        / (f"{row.well}_s{row.site}_w{row.channel}.png")
    )
    pixels = np.asarray(Image.open(png))
    assert row["mean"] == pytest.approx(pixels.mean(), abs=1e-4)
    assert row["max"] == pixels.max()


def test_pixel_stats_errors_name_the_file(tmp_path, tiny_raw):
    from cellblock.screen.metadata import load_pixel_stats

    df = pd.read_csv(tiny_raw / "pixel_stats.csv")
    df.drop(columns="median").to_csv(tmp_path / "pixel_stats.csv", index=False)
    with pytest.raises(MetadataError, match=r"pixel_stats.csv: missing column\(s\) \['median'\]"):
        load_pixel_stats(tmp_path)
