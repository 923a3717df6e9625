"""Per-plate assignment on crafted log-probabilities: permutations, planted answers, controls."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import log_softmax

from cellblock.ensemble.assign import assign, assign_plate, control_ids
from cellblock.ensemble.groups import detect_groups
from cellblock.errors import UserError

# A crafted screen like the demo's: 2 experiments x 4 plates; 4 groups of 16 treatments
# (ids 0..63), controls 64, 65 (positive) and 66 (negative); each plate: its group's 16
# treatments once, both positives and the negative.
GROUPS = [np.arange(g * 16, g * 16 + 16) for g in range(4)]
CONTROLS = {64: "positive_control", 65: "positive_control", 66: "negative_control"}
CONTROL_IDS = np.array(sorted(CONTROLS))
N_CLASSES = 67


def crafted_wells(rotations=((0, 1, 2, 3), (2, 0, 3, 1)), seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for e, rotation in enumerate(rotations):
        for plate, group in enumerate(rotation, start=1):
            labels = [*rng.permutation(GROUPS[group]).tolist(), *CONTROLS]
            for i, sirna in enumerate(labels):
                rows.append({
                    "id_code": f"HEPG2-0{e + 1}_{plate}_W{i:02d}",
                    "experiment": f"HEPG2-0{e + 1}",
                    "plate": plate,
                    "well": f"W{i:02d}",
                    "row": i // 5,
                    "col": i % 5,
                    "cell_type": "HEPG2",
                    "split": "test",
                    "well_type": CONTROLS.get(sirna, "treatment"),
                    "sirna": sirna,
                })  # fmt: skip
    return pd.DataFrame(rows).astype({"sirna": "Int64"})


def noisy_log_probs(truth: np.ndarray, signal: float, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, noise, (len(truth), N_CLASSES))
    logits[np.arange(len(truth)), truth] += signal
    return log_softmax(logits, axis=1)


def test_assign_plate_is_a_permutation():
    rng = np.random.default_rng(1)
    scores = log_softmax(rng.normal(size=(12, 12)), axis=1)
    picked = assign_plate(scores)
    assert sorted(picked) == list(range(12))
    # it is the optimum: no single swap of two wells' labels improves the total
    total = scores[np.arange(12), picked].sum()
    for i in range(12):
        for j in range(i + 1, 12):
            swapped = picked.copy()
            swapped[[i, j]] = swapped[[j, i]]
            assert scores[np.arange(12), swapped].sum() <= total + 1e-12


def test_assign_plate_fewer_and_more_wells_than_classes():
    rng = np.random.default_rng(2)
    fewer = assign_plate(rng.normal(size=(5, 9)))
    assert len(set(fewer.tolist())) == 5 and fewer.max() < 9  # each class at most once
    more = assign_plate(rng.normal(size=(11, 4)))
    assert np.bincount(more, minlength=4).max() <= 3  # ceil(11 / 4)
    assert np.bincount(more, minlength=4).min() >= 2  # as balanced as it can be
    assert len(assign_plate(np.zeros((0, 4)))) == 0


def test_planted_answer_recovered_where_argmax_fails():
    # 8 wells, 8 treatments; a decoy class 0 outscores the true class of wells 1..7
    truth = np.arange(8)
    rng = np.random.default_rng(3)
    scores = rng.normal(0.0, 0.2, (8, 8))
    scores[truth, truth] += 2.0
    scores[:, 0] += 2.5
    argmax = scores.argmax(axis=1)
    assert (argmax == truth).mean() <= 0.25  # argmax: nearly everything is the decoy
    assert (assign_plate(log_softmax(scores, axis=1)) == truth).all()


def test_assignment_beats_argmax_under_noise():
    wells = crafted_wells()
    truth = wells["sirna"].to_numpy(dtype=np.int64)
    lp = noisy_log_probs(truth, signal=2.5, noise=1.0, seed=4)
    groups = detect_groups(wells, lp, np.arange(N_CLASSES), GROUPS)
    result = assign(wells, lp, np.arange(N_CLASSES), CONTROL_IDS, GROUPS, groups)
    treat = (wells["well_type"] == "treatment").to_numpy()
    argmax_acc = (lp.argmax(axis=1) == truth)[treat].mean()
    assigned_acc = (result.labels == truth)[treat].mean()
    assert argmax_acc < 0.7
    assert assigned_acc >= 0.85 and assigned_acc >= argmax_acc + 0.2
    assert (result.masked == truth)[treat].mean() < assigned_acc


def test_each_plate_gets_its_group_once_and_controls_keep_labels():
    wells = crafted_wells()
    truth = wells["sirna"].to_numpy(dtype=np.int64)
    lp = noisy_log_probs(truth, signal=1.0, noise=1.0, seed=5)
    # the model calls every control well a treatment: known control labels must win
    control = (wells["well_type"] != "treatment").to_numpy()
    treatment_3 = np.zeros(N_CLASSES)
    treatment_3[3] = 9.0
    lp[control] = log_softmax(treatment_3)
    groups = detect_groups(wells, lp, np.arange(N_CLASSES), GROUPS)
    result = assign(wells, lp, np.arange(N_CLASSES), CONTROL_IDS, GROUPS, groups)
    assert (result.labels[control] == truth[control]).all()
    assert (result.confidence[control] == 1.0).all()
    for (_, _), part in wells[~control].groupby(["experiment", "plate"]):
        labels = result.labels[part.index]
        group = result.group[part.index][0]
        assert sorted(labels) == sorted(GROUPS[group])  # a permutation of its group
    assert ((result.confidence > 0) & (result.confidence <= 1)).all()


def test_control_without_known_label_takes_best_control_class():
    wells = crafted_wells()
    truth = wells["sirna"].to_numpy(dtype=np.int64)
    lp = noisy_log_probs(truth, signal=4.0, noise=0.1, seed=6)
    unknown = wells.index[wells["well_type"] != "treatment"][:3]
    wells.loc[unknown, "sirna"] = pd.NA
    result = assign(wells, lp, np.arange(N_CLASSES), CONTROL_IDS, None, None)
    assert (result.labels[unknown] == truth[unknown]).all()
    assert (result.confidence[unknown] < 1.0).all()
    # without a group mask every treatment is a candidate, still at most once per plate
    treat = wells["well_type"] == "treatment"
    for _, part in wells[treat].groupby(["experiment", "plate"]):
        assert len(set(result.labels[part.index].tolist())) == len(part)
    assert (result.group == -1).all()


def test_missing_classes_are_a_clear_error():
    wells = crafted_wells()
    lp = noisy_log_probs(wells["sirna"].to_numpy(dtype=np.int64), 2.0, 1.0, 7)
    controls_only = lp[:, 64:]
    with pytest.raises(UserError, match=r"no column for .* treatment"):
        assign(wells, controls_only, CONTROL_IDS, CONTROL_IDS, None, None)


def test_control_ids():
    assert control_ids(crafted_wells()).tolist() == [64, 65, 66]
