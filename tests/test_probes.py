"""Reference probes: image statistics (the floor) and the generator's traits (the ceiling)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cellblock.errors import UserError
from cellblock.probes import reference_probes
from cellblock.probes.imagestats import STATISTICS, feature_names, site_statistics, site_table
from cellblock.probes.run import oracle_sites
from cellblock.store.pack import pack_dataset
from cellblock.synth import write_dataset
from cellblock.synth.traits import TRAITS
from tests.conftest import ROOT, TINY, run_script

# TINY: 16 treatments in 4 groups of 4, 4 held-out experiments x 4 plates -> 64 scored
# treatment wells; chance: 1/16 argmax, 1/4 after the assignment within a plate's group.


def test_site_statistics_of_known_images():
    flat = np.full((2, 8, 8), 7, np.uint8)
    stats = site_statistics(flat).reshape(2, len(STATISTICS))
    named = dict(zip(STATISTICS, stats[0], strict=True))
    assert named["mean"] == 7 and named["p01"] == named["p99"] == 7
    assert named["std"] == named["skew"] == named["gradient"] == named["coarse_std"] == 0
    halves = np.zeros((1, 8, 8), np.uint8)
    halves[:, :, 4:] = 100  # left half dark, right half bright: one edge, coarse layout only
    named = dict(zip(STATISTICS, site_statistics(halves), strict=True))
    assert named["mean"] == 50 and named["std"] == 50 and named["p50"] == 50
    assert named["gradient"] == pytest.approx(100 / 7 / 2)  # one jump in 7 steps, x only
    assert named["coarse_std"] == 50 and named["fine_std"] == 0
    assert feature_names(["a", "b"])[:2] == ["a_mean", "a_std"] and len(feature_names(["a"])) == 14


def test_site_table_keeps_the_rows_order_across_workers(tiny_packed):
    from cellblock.store.packed import PackedDataset

    packed = PackedDataset(tiny_packed)
    rows = packed.metadata.sample(20, random_state=0)
    one = site_table(tiny_packed, rows, workers=1, progress=False)
    two = site_table(tiny_packed, rows, workers=2, progress=False)
    pd.testing.assert_frame_equal(one, two)
    assert list(one.index) == list(rows.index)
    r = rows.iloc[3]
    image = packed.read_site(r.experiment, int(r.plate), int(r.row), int(r.col), int(r.site))
    names = feature_names(list(packed.info.channels))
    np.testing.assert_allclose(
        one.loc[rows.index[3], names].to_numpy(float), site_statistics(image)
    )


def test_probes_recover_a_planted_signal(tiny_raw, tiny_packed, tmp_path):
    r = run_script(ROOT / "04_ensemble/reference_probes.py", "--data", tiny_packed, "--traits",
                   tiny_raw / "site_traits.csv", "--out", tmp_path / "probes")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "| image probe |" in r.stdout and "| oracle probe |" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("held-out treatment wells, assigned: ")
    report = json.loads((tmp_path / "probes" / "probes.json").read_text())
    image, oracle = report["probes"]["image"], report["probes"]["oracle"]
    assert image["n_scored_wells"] == oracle["n_scored_wells"] == 64
    assert image["n_features"] == 84 and oracle["n_features"] == len(TRAITS)
    # the traits are the phenotype itself: the ceiling
    assert oracle["accuracy"]["argmax"]["overall"] > 0.6  # 0.81 when written
    assert oracle["accuracy"]["assigned"]["overall"] > 0.85  # 0.97
    # the pixels carry it too, well above chance (1/16; 1/4 assigned)
    assert image["accuracy"]["argmax"]["overall"] > 0.2  # 0.34
    assert image["accuracy"]["assigned"]["overall"] > 0.5  # 0.72
    assert set(image["accuracy"]["assigned"]["per_cell_type"]) == {"HEPG2", "HUVEC", "RPE", "U2OS"}


def test_probes_on_pure_noise_stay_near_chance(tmp_path):
    raw, packed = tmp_path / "raw", tmp_path / "dataset"
    write_dataset(TINY.replace(effect_size=0.0, seed=5), raw, workers=2, progress=False)
    pack_dataset(raw, packed, workers=2, progress=False)
    report = reference_probes(packed, raw / "site_traits.csv", workers=2, progress=False)
    for name in ("image", "oracle"):
        acc = report["probes"][name]["accuracy"]
        # 64 wells, chance 1/16 argmax; assigned: 1/4 in the right group, but on noise the
        # group detection is right on a quarter of the plates: ~1/16 too (seen: <= 0.125)
        assert acc["argmax"]["overall"] < 0.2, (name, acc["argmax"]["overall"])
        assert acc["assigned"]["overall"] < 0.35, (name, acc["assigned"]["overall"])


def test_oracle_traits_file_errors(tiny_raw, tmp_path):
    sites = pd.DataFrame({"id_code": ["X_1_B02"], "site": [1]})
    with pytest.raises(UserError, match="cannot read the site traits"):
        oracle_sites(sites, tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("id_code,value\nX_1_B02,1\n")
    with pytest.raises(UserError, match=r"no column\(s\) \['n_cells', 'site'\]"):
        oracle_sites(sites, tmp_path / "bad.csv")
    with pytest.raises(UserError, match="no traits for 1 site"):
        oracle_sites(sites, tiny_raw / "site_traits.csv")
