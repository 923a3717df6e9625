"""Plate-group detection: groups learned from training plates, one group per plate."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import log_softmax

from cellblock.ensemble.groups import detect_groups, group_scores, treatment_groups, true_groups
from cellblock.errors import UserError
from tests.test_ensemble_assign import GROUPS, N_CLASSES, crafted_wells, noisy_log_probs


def site_table(wells: pd.DataFrame, split: str) -> pd.DataFrame:
    return wells.assign(split=split)


def test_groups_come_from_training_plates_only():
    train = site_table(crafted_wells(), "train")
    test = site_table(crafted_wells(seed=9), "test")
    # a corrupted answer key on the test plates must not change the groups
    test["sirna"] = test["sirna"].where(test["well_type"] != "treatment", 0)
    groups = treatment_groups(pd.concat([train, test], ignore_index=True))
    assert [g.tolist() for g in groups] == [g.tolist() for g in GROUPS]


def test_no_training_labels_is_a_clear_error():
    with pytest.raises(UserError, match=r"no labelled training plates.*--no-groups"):
        treatment_groups(site_table(crafted_wells(), "test"))


def test_group_scores_prefer_the_true_group():
    wells = crafted_wells()
    truth = wells["sirna"].to_numpy(dtype=np.int64)
    lp = noisy_log_probs(truth, signal=2.0, noise=1.0, seed=1)
    plate = ((wells["experiment"] == "HEPG2-01") & (wells["plate"] == 2)).to_numpy()
    plate = plate & (wells["well_type"] == "treatment").to_numpy()
    scores = group_scores(lp[plate], [np.asarray(g) for g in GROUPS])
    assert scores.argmax() == 1 and np.all(scores <= 0)


@pytest.mark.parametrize("signal", [1.0, 2.0])
def test_detect_groups_picks_each_plates_group(signal):
    rotations = ((0, 1, 2, 3), (2, 0, 3, 1), (3, 2, 1, 0))
    wells = crafted_wells(rotations)
    truth = wells["sirna"].to_numpy(dtype=np.int64)
    lp = noisy_log_probs(truth, signal=signal, noise=1.0, seed=2)
    found = detect_groups(wells, lp, np.arange(N_CLASSES), GROUPS)
    expected = [g for rotation in rotations for g in rotation]
    assert found["group"].tolist() == expected
    if signal >= 2.0:
        assert (found["margin"] > 0).all()  # weaker: the joint choice may overrule a plate
    assert true_groups(wells, GROUPS).tolist() == expected  # the reporting helper agrees
    for _, part in found.groupby("experiment"):  # an experiment's plates: 4 different groups
        assert sorted(part["group"]) == [0, 1, 2, 3]


def test_joint_choice_fixes_a_plate_that_prefers_a_taken_group():
    # plate 1 of HEPG2-01 looks slightly more like group 1 than its own group 0, but plate 2
    # is clearly group 1: within the experiment the plates carry different groups
    wells = crafted_wells()
    treat = (wells["well_type"] == "treatment").to_numpy()
    plate = wells["plate"].to_numpy()
    exp1 = (wells["experiment"] == "HEPG2-01").to_numpy()
    logits = np.zeros((len(wells), N_CLASSES))
    for p, own in ((1, 0), (2, 1), (3, 2), (4, 3)):
        rows = treat & exp1 & (plate == p)
        logits[np.ix_(rows, GROUPS[own])] = 1.0
    rows = treat & exp1 & (plate == 1)
    logits[np.ix_(rows, GROUPS[1])] = 1.1  # the misleading plate
    logits[~exp1] = np.random.default_rng(0).normal(size=(int((~exp1).sum()), N_CLASSES))
    lp = log_softmax(logits, axis=1)
    per_plate_best = [
        group_scores(lp[treat & exp1 & (plate == p)], GROUPS).argmax() for p in (1, 2)
    ]
    assert per_plate_best == [1, 1]  # taken alone, both plates would say group 1
    found = detect_groups(wells, lp, np.arange(N_CLASSES), GROUPS)
    first = found[found["experiment"] == "HEPG2-01"]
    assert first["group"].tolist() == [0, 1, 2, 3]
    assert first["margin"].iloc[0] < 0  # its chosen group scored below its favourite


def test_more_plates_than_groups_takes_each_plates_best():
    wells = crafted_wells(((0, 1, 2, 3),))
    extra = wells[wells["plate"] == 1].assign(
        plate=5, id_code=lambda d: d["id_code"].str.replace("_1_", "_5_")
    )
    wells = pd.concat([wells, extra], ignore_index=True)
    truth = wells["sirna"].to_numpy(dtype=np.int64)
    lp = noisy_log_probs(truth, signal=3.0, noise=0.5, seed=3)
    found = detect_groups(wells, lp, np.arange(N_CLASSES), GROUPS)
    assert found["group"].tolist() == [0, 1, 2, 3, 0]


def test_detect_groups_needs_the_group_classes():
    wells = crafted_wells()
    lp = noisy_log_probs(wells["sirna"].to_numpy(dtype=np.int64), 2.0, 1.0, 4)
    with pytest.raises(UserError, match="no column for 16 classes of treatment group 0"):
        detect_groups(wells, lp[:, 16:], np.arange(16, N_CLASSES), GROUPS)
