"""Choosing sites (``cellblock.screen.sites``) and plate keys (``cellblock.screen.plates``)."""

import pandas as pd
import pytest

from cellblock.errors import UserError
from cellblock.screen.plates import parse_plate_key, plate_key
from cellblock.screen.sites import plate_keys, select_sites, well_table


def _table() -> pd.DataFrame:
    """Two experiments (one per split) of two plates, two wells of two sites each, shuffled."""
    rows = []
    for experiment, split in (("HEPG2-01", "train"), ("HEPG2-02", "test")):
        for plate in (1, 2):
            for col in (1, 2):
                for site in (1, 2):
                    well = f"B0{col + 1}"
                    rows.append({"id_code": f"{experiment}_{plate}_{well}",
                                 "experiment": experiment, "plate": plate, "well": well,
                                 "row": 1, "col": col, "site": site, "cell_type": "HEPG2",
                                 "split": split, "well_type": "treatment",
                                 "sirna": col})  # fmt: skip
    return pd.DataFrame(rows).sample(frac=1.0, random_state=3)


def test_plate_keys_round_trip():
    assert plate_key("HEPG2-01", 2) == "HEPG2-01/Plate2"
    assert parse_plate_key("U2OS-03/Plate4") == ("U2OS-03", 4)
    assert list(plate_keys(_table().head(1))) == [
        plate_key(*_table().iloc[0][["experiment", "plate"]])
    ]
    with pytest.raises(ValueError, match="malformed plate key 'HEPG2-01'"):
        parse_plate_key("HEPG2-01")


def test_select_sites_by_split_experiment_and_plate():
    table = _table()
    test = select_sites(table, "test")
    assert set(test["experiment"]) == {"HEPG2-02"} and len(test) == 8
    assert isinstance(test.index, pd.RangeIndex)
    assert test[["plate", "col", "site"]].values.tolist() == sorted(
        test[["plate", "col", "site"]].values.tolist()
    )
    one_plate = select_sites(table, "all", ["HEPG2-01/Plate2", "HEPG2-02"])
    assert sorted(set(plate_keys(one_plate))) == ["HEPG2-01/Plate2", "HEPG2-02/Plate1",
                                                  "HEPG2-02/Plate2"]  # fmt: skip
    wells, starts = well_table(one_plate)
    assert len(wells) == 6 and list(starts) == [0, 2, 4, 6, 8, 10]
    assert "site" not in wells.columns


@pytest.mark.parametrize(
    ("split", "experiments", "message"),
    [
        ("val", None, r"--split 'val': expected one of test, train, all"),
        ("test", ["NOPE-01"], r"--experiments NOPE-01: not in the table \(experiments: HEPG2"),
        ("test", ["HEPG2-01/Plate1"], r"in split train, not test; use --split all"),
        ("test", ["HEPG2-02/Plate9"], r"--experiments HEPG2-02/Plate9: not in the table"),
    ],
)
def test_select_sites_names_what_is_wrong(split, experiments, message):
    with pytest.raises(UserError, match=message):
        select_sites(_table(), split, experiments, source="the table")


def test_select_sites_without_the_split():
    train_only = _table().query("split == 'train'")
    with pytest.raises(UserError, match=r"has no 'test' split \(its splits: train\)"):
        select_sites(train_only, "test")
    with pytest.raises(UserError, match="not consecutive"):
        well_table(train_only)  # shuffled: a well's sites are apart


@pytest.mark.parametrize("dtype", [object, "string"])
def test_well_table_takes_any_string_dtype(dtype):
    sites = select_sites(_table(), "all")
    sites["id_code"] = sites["id_code"].astype(dtype)
    wells, starts = well_table(sites)
    assert len(wells) == 8 and list(starts) == list(range(0, 16, 2))
