"""Structure of the synthetic screen: it must be RxRx1's structure."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellblock.errors import ConfigError
from cellblock.screen.metadata import load_kaggle, plate_groups
from cellblock.synth import Design, preset, write_dataset
from tests.conftest import TINY

KAGGLE_FILES = ["train.csv", "test.csv", "train_controls.csv", "test_controls.csv",
                "pixel_stats.csv", "sample_submission.csv"]  # fmt: skip


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_kaggle_files_and_columns_match_rxrx1(tiny_raw):
    for name in KAGGLE_FILES:
        assert (tiny_raw / name).is_file(), name
    cols = {name: list(pd.read_csv(tiny_raw / name, nrows=1).columns) for name in KAGGLE_FILES}
    assert cols["train.csv"] == ["id_code", "experiment", "plate", "well", "sirna"]
    assert cols["test.csv"] == ["id_code", "experiment", "plate", "well"]
    assert cols["train_controls.csv"] == [
        "id_code",
        "experiment",
        "plate",
        "well",
        "sirna",
        "well_type",
    ]
    assert cols["test_controls.csv"] == cols["train_controls.csv"]
    assert cols["pixel_stats.csv"] == [
        "id_code",
        "experiment",
        "plate",
        "well",
        "site",
        "channel",
        "mean",
        "std",
        "median",
        "min",
        "max",
    ]
    assert cols["sample_submission.csv"] == ["id_code", "sirna"]
    train = pd.read_csv(tiny_raw / "train.csv")
    assert train.id_code.str.fullmatch(r"(HEPG2|HUVEC|RPE|U2OS)-\d\d_[1-4]_[A-P]\d\d").all()
    assert (
        train.id_code == train.experiment + "_" + train.plate.astype(str) + "_" + train.well
    ).all()
    assert train.sirna.between(0, TINY.n_treatments - 1).all()
    # PNG names: {EXP}/Plate{p}/{WELL}_s{site}_w{ch}.png, 6 channels per site.
    row = train.iloc[0]
    folder = tiny_raw / "train" / row.experiment / f"Plate{row.plate}"
    assert sorted(p.name for p in folder.glob(f"{row.well}_s1_w*.png")) == [
        f"{row.well}_s1_w{c}.png" for c in range(1, 7)
    ]


def test_every_plate_holds_one_group_each_treatment_once_with_controls(tiny_raw):
    sites = load_kaggle(tiny_raw)
    wells = sites[sites.site == 1]
    groups = plate_groups(wells[wells.split == "train"])
    assert len(groups) == 4
    assert sorted(x for g in groups for x in g) == list(range(TINY.n_treatments))
    controls = set(range(TINY.n_treatments, TINY.n_classes))
    for (exp, plate), g in wells.groupby(["experiment", "plate"]):
        treat = g[g.well_type == "treatment"].sirna.astype(int)
        assert treat.is_unique, f"{exp}/{plate}: a treatment appears twice"
        assert sum(set(treat) == grp for grp in groups) == 1, f"{exp}/{plate}: not one group"
        assert set(g[g.well_type != "treatment"].sirna.astype(int)) == controls
        assert (g.well_type == "negative_control").sum() == 1
    for exp, g in wells[wells.well_type == "treatment"].groupby("experiment"):
        plate_groups_seen = {
            plate: groups.index(frozenset(h.sirna.astype(int))) for plate, h in g.groupby("plate")
        }
        assert sorted(plate_groups_seen.values()) == [0, 1, 2, 3], exp  # a rotation
    shifts = {
        exp: (groups.index(frozenset(g[g.plate == 1].sirna.astype(int))))
        for exp, g in wells[wells.well_type == "treatment"].groupby("experiment")
    }
    assert len(set(shifts.values())) > 1, "the rotation should differ between experiments"


def test_labels_numbered_as_rxrx1():
    cfg = preset("rxrx1")
    design = Design(cfg)
    assert cfg.n_classes == 1139 and cfg.wells_per_plate == 308
    assert design.plate_format.n_wells == 384
    assert design.well_type(1107) == "treatment"
    assert design.well_type(1108) == design.well_type(1137) == "positive_control"
    assert design.well_type(1138) == "negative_control"
    assert len(design.experiments) == 51 and len(cfg.test_experiments()) == 18
    assert not np.any(design.phenotypes[1138]), "negative control has no phenotype"
    effect = np.abs(design.phenotypes).sum(1)
    assert effect[1108:1138].mean() > 2 * effect[:1108].mean(), "controls are stronger"


def test_same_seed_same_bytes_and_subsets_match(tmp_path, tiny_raw):
    again = tmp_path / "again"
    write_dataset(TINY, again, workers=1, progress=False)
    assert _digest(again) == _digest(tiny_raw)
    subset = tmp_path / "subset"
    write_dataset(TINY, subset, experiments=["RPE-02"], workers=1, progress=False)
    sub = _digest(subset / "test" / "RPE-02")
    assert sub and sub == _digest(tiny_raw / "test" / "RPE-02")
    other = tmp_path / "other"
    write_dataset(TINY.replace(seed=1), other, experiments=["RPE-02"], progress=False)
    assert _digest(other / "test" / "RPE-02") != sub


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="multiple of 4"):
        preset("demo").replace(n_treatments=10)
    with pytest.raises(ConfigError, match="effect_sise"):
        preset("demo").replace(effect_sise=1.0)


def test_site_traits_are_the_cells_truth_behind_the_pixels(tiny_raw):
    from cellblock.synth.traits import TRAITS

    traits = pd.read_csv(tiny_raw / "site_traits.csv")
    assert list(traits.columns) == ["id_code", "site", "n_cells", *TRAITS]
    wells = pd.concat([pd.read_csv(tiny_raw / f) for f in KAGGLE_FILES[:4]])
    assert len(traits) == len(wells) * TINY.n_sites and (traits.n_cells >= 1).all()
    design = Design(TINY)
    plates = {(p.experiment, p.plate): p for p in design.plates()}
    deviations = []
    for row in traits.sample(40, random_state=0).itertuples(index=False):
        exp, plate, well = row.id_code.split("_")
        p = plates[(exp, int(plate))]
        shift = design.trait_shift(p, p.wells[well])
        measured = np.array([getattr(row, t) for t in TRAITS])
        # the mean of n_cells draws around the site's shift: within a few standard errors
        deviations.append((measured - shift) / (TINY.cell_variation / np.sqrt(row.n_cells)))
    z = np.concatenate(deviations)
    assert np.abs(z).max() < 5 and 0.6 < z.std() < 1.4
