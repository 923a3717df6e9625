import pytest

from cellblock.screen.plates import (
    PlateFormat,
    cell_type_of,
    id_code,
    parse_id_code,
    parse_site_filename,
    site_path,
)


@pytest.mark.parametrize(
    ("n", "rows", "cols", "inner"), [(96, 8, 12, 60), (384, 16, 24, 308), (1536, 32, 48, 1380)]
)
def test_formats_and_inner_wells(n, rows, cols, inner):
    fmt = PlateFormat.from_n_wells(n)
    assert fmt.shape == (rows, cols) and fmt.n_wells == n
    assert len(fmt.wells()) == n and len(set(fmt.wells())) == n
    assert len(fmt.inner_wells()) == inner
    for well in fmt.wells():
        assert fmt.well_name(*fmt.well_index(well)) == well


def test_rxrx1_inner_wells_are_b02_to_o23():
    inner = PlateFormat.from_n_wells(384).inner_wells()
    assert inner[0] == "B02" and inner[-1] == "O23"
    assert "A01" not in inner and "P24" not in inner and "B01" not in inner


def test_well_names_and_indices():
    fmt = PlateFormat.from_n_wells(1536)
    assert fmt.well_index("B02") == (1, 1)
    assert fmt.well_name(26, 0) == "AA01"
    assert fmt.well_name(31, 47) == "AF48"
    assert fmt.well_index("AF48") == (31, 47)


@pytest.mark.parametrize("bad", ["Q01", "A25", "A00", "b02", "B2x", ""])
def test_bad_wells_are_named(bad):
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(")):
        PlateFormat.from_n_wells(384).well_index(bad)


def test_smallest_containing():
    assert PlateFormat.smallest_containing({"B02", "G11"}).n_wells == 96
    assert PlateFormat.smallest_containing({"B02", "O23"}).n_wells == 384
    assert PlateFormat.smallest_containing({"AB40"}).n_wells == 1536
    with pytest.raises(ValueError, match="ZZ99"):
        PlateFormat.smallest_containing({"ZZ99"})


def test_id_code_round_trip():
    assert id_code("HEPG2-01", 1, "B02") == "HEPG2-01_1_B02"
    assert parse_id_code("HUVEC-17_4_O23") == ("HUVEC-17", 4, "O23")
    with pytest.raises(ValueError, match="malformed id_code"):
        parse_id_code("HEPG2-01-1-B02")
    assert cell_type_of("U2OS-05") == "U2OS"
    with pytest.raises(ValueError, match="CELLTYPE-NN"):
        cell_type_of("plate7")


def test_site_paths_both_layouts():
    assert str(site_path("kaggle", "train", "HEPG2-01", 1, "B02", 1, channel=1)) == (
        "train/HEPG2-01/Plate1/B02_s1_w1.png"
    )
    assert str(site_path("v1", "test", "RPE-09", 3, "C05", 2, channel=6)) == (
        "images/RPE-09/Plate3/C05_s2_w6.png"
    )
    with pytest.raises(ValueError, match="layout"):
        site_path("zip", "train", "HEPG2-01", 1, "B02", 1, channel=1)
    f = parse_site_filename("O23_s2_w6.png")
    assert (f.well, f.site, f.channel) == ("O23", 2, 6)
    assert parse_site_filename("O23_s2_w6.tif") is None
