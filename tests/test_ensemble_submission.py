"""Submissions: Kaggle format, validation both ways; accuracy breakdowns; profiles."""

import numpy as np
import pandas as pd
import pytest

from cellblock.ensemble.profiles import (
    normalize_profiles,
    profile_table,
    reduce_width,
    retrieval_benchmark,
)
from cellblock.ensemble.submission import (
    expected_ids,
    make_submission,
    read_submission,
    validate_submission,
    write_submission,
)
from cellblock.errors import UserError
from cellblock.metrics import accuracy_breakdown, format_breakdown
from tests.test_ensemble_assign import N_CLASSES, crafted_wells


def test_submission_has_every_treatment_well_once(tmp_path):
    wells = crafted_wells()
    labels = wells["sirna"].to_numpy(dtype=np.int64)
    sub = make_submission(wells, labels)
    assert list(sub.columns) == ["id_code", "sirna"]
    assert len(sub) == (wells["well_type"] == "treatment").sum()  # Kaggle: treatments only
    validate_submission(sub, expected_ids(wells), N_CLASSES)
    path = write_submission(sub, tmp_path / "submission.csv")
    assert path.read_text().splitlines()[0] == "id_code,sirna"
    back = read_submission(path)
    pd.testing.assert_frame_equal(back, sub)
    with_controls = make_submission(wells, labels, include_controls=True)
    assert len(with_controls) == len(wells)
    validate_submission(with_controls, expected_ids(wells, include_controls=True), N_CLASSES)
    with pytest.raises(UserError, match="not in the split"):  # controls were not asked for
        validate_submission(with_controls, expected_ids(wells), N_CLASSES)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.iloc[1:], r"1 id_code\(s\) of the split missing"),
        (lambda s: pd.concat([s, s.iloc[:1]]), "appears more than once"),
        (
            lambda s: pd.concat([s, pd.DataFrame({"id_code": ["X_1_A01"], "sirna": [0]})]),
            r"1 id_code\(s\) not in the split, e.g. \['X_1_A01'\]",
        ),
        (lambda s: s.assign(sirna=s["sirna"].where(s.index != 3, N_CLASSES)), "is not a class"),
        (lambda s: s.assign(sirna=s["sirna"].where(s.index != 3, -1)), "is not a class"),
        (lambda s: s.assign(sirna=s["sirna"].astype(str).where(s.index != 3, "x")), "'x'"),
        (lambda s: s.assign(sirna=s["sirna"].astype(float).where(s.index != 3, 2.5)), "2.5"),
        (lambda s: s.rename(columns={"sirna": "label"}), "columns"),
    ],
)
def test_bad_submissions_are_refused(change, message):
    wells = crafted_wells()
    sub = make_submission(wells, wells["sirna"].to_numpy(dtype=np.int64))
    with pytest.raises(UserError, match=message):
        validate_submission(change(sub), expected_ids(wells), N_CLASSES, "sub.csv")


def test_read_submission_errors(tmp_path):
    with pytest.raises(UserError, match="submission file not found"):
        read_submission(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="not a readable CSV"):
        read_submission(tmp_path / "empty.csv")


def test_accuracy_breakdown():
    wells = crafted_wells().assign(cell_type=lambda d: np.where(d["plate"] <= 2, "A", "B"))
    predicted = wells["sirna"].to_numpy(dtype=np.int64).copy()
    wrong = (wells["experiment"] == "HEPG2-02").to_numpy() & (wells["plate"] == 4).to_numpy()
    predicted[wrong] = -5
    acc = accuracy_breakdown(wells, predicted)
    assert acc["n"] == len(wells)
    assert acc["overall"] == pytest.approx(1 - wrong.mean())
    assert acc["per_experiment"] == {"HEPG2-01": 1.0, "HEPG2-02": 0.75}
    assert acc["per_cell_type"] == {"A": 1.0, "B": 0.75}
    assert acc["n_per_cell_type"] == {"A": len(wells) // 2, "B": len(wells) // 2}
    unknown = wells.assign(sirna=wells["sirna"].where(wells["plate"] != 1))
    assert accuracy_breakdown(unknown, predicted)["n"] == len(wells) * 3 // 4
    assert accuracy_breakdown(wells.assign(sirna=pd.NA), predicted) is None
    text = format_breakdown({"before": acc, "after": None})
    assert "HEPG2-02" in text and "0.7500" in text and "-" in text


def test_profiles_remove_batch_offsets_and_retrieve_treatments():
    wells = crafted_wells()
    rng = np.random.default_rng(0)
    labels = wells["sirna"].to_numpy(dtype=np.int64)
    directions = rng.normal(size=(N_CLASSES, 16))
    plates = wells["experiment"] + wells["plate"].astype(str)
    offsets = {p: rng.normal(0, 10, 16) for p in plates.unique()}  # batch effect >> signal
    emb = (
        directions[labels]
        + np.stack([offsets[p] for p in plates])
        + rng.normal(0, 0.3, (len(wells), 16))
    )
    profiles = normalize_profiles(wells, emb)
    for p in plates.unique():
        rows = (plates == p).to_numpy()
        np.testing.assert_allclose(profiles["centred"][rows].mean(axis=0), 0, atol=1e-5)
    negative = (wells["well_type"] == "negative_control").to_numpy()
    for e in wells["experiment"].unique():
        rows = (wells["experiment"] == e).to_numpy()
        # the experiment's negative controls are the origin; unit spread per dimension
        np.testing.assert_allclose(
            profiles["normalized"][rows & negative].mean(axis=0), 0, atol=1e-4
        )
        np.testing.assert_allclose(profiles["normalized"][rows].std(axis=0), 1, atol=1e-3)
    bench = retrieval_benchmark(wells, profiles, wells["sirna"])
    assert bench["n_queries"] == (wells["well_type"] == "treatment").sum()
    assert bench["chance"] == pytest.approx(1 / 64)
    assert bench["raw"] < 0.3 and bench["centred"] > 0.9 and bench["normalized"] > 0.9
    table = profile_table(wells, profiles, labels, wells["sirna"])
    assert table.shape == (len(wells), 9 + 1 + 1 + 32)
    assert "centred_0000" in table and "normalized_0015" in table
    first = (wells["experiment"] == "HEPG2-01").to_numpy()
    alone = {k: v[first] for k, v in profiles.items()}
    assert retrieval_benchmark(wells[first], alone, wells["sirna"][first])["n_queries"] == 0


def test_reduce_width_keeps_the_leading_components():
    rng = np.random.default_rng(1)
    # 300 wells x 200 dims of rank ~5 signal plus small noise
    x = rng.normal(size=(300, 5)) @ (rng.normal(size=(5, 200)) * [[9], [7], [5], [3], [2]])
    x += rng.normal(0, 0.05, x.shape)
    narrow = reduce_width(x, 250)
    assert narrow is x  # narrow enough: unchanged
    reduced = reduce_width(x, 5)
    assert reduced.shape == (300, 5)
    centred = x - x.mean(axis=0)
    exact = np.linalg.svd(centred, compute_uv=False)[:5] ** 2
    np.testing.assert_allclose(np.sort(reduced.var(axis=0) * 300)[::-1], exact, rtol=1e-3)
    # distances between wells are kept (almost all variance is in 5 components)
    d_full = np.linalg.norm(centred[:20, None] - centred[None, :20], axis=-1)
    d_red = np.linalg.norm(reduced[:20, None] - reduced[None, :20], axis=-1)
    np.testing.assert_allclose(d_red, d_full, rtol=0.05, atol=0.5)
    np.testing.assert_array_equal(reduce_width(x, 5), reduced)  # seeded: reproducible
