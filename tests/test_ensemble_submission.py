"""Submissions: Kaggle format, validation both ways; accuracy breakdowns."""

import numpy as np
import pandas as pd
import pytest

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
