"""Per-plate assignment: every treatment of the plate's group at most once per plate.

The treatment wells of a plate are matched to the classes of its group by
``scipy.optimize.linear_sum_assignment`` on their log-probabilities (maximizing the
plate's total log-likelihood under "each treatment once"). Control wells keep their
known control labels (RxRx1 publishes them in ``*_controls.csv``); a control well
without a known label takes its most likely control class.

Plates with fewer treatment wells than group members (a partly imaged plate) leave
some classes unused. Plates with more wells than members (duplicated treatments, a
mis-detected group) cannot give each well its own class; there every class is offered
``ceil(wells / members)`` times, so the labels stay as balanced as they can be.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.special import log_softmax

from cellblock.ensemble.combine import class_columns
from cellblock.errors import UserError

__all__ = ["Assignment", "assign", "assign_plate", "control_ids"]

log = logging.getLogger(__name__)


@dataclass
class Assignment:
    """Labels per well after the plate step.

    Args:
        labels: ``(n_wells,)`` sirna id assigned to each well.
        confidence: ``(n_wells,)`` probability of that label among the well's candidates
            (the group's treatments; 1.0 for a known control label).
        masked: ``(n_wells,)`` argmax among the candidates, before the assignment.
        group: ``(n_wells,)`` the plate's group index (-1: no group mask).
    """

    labels: np.ndarray
    confidence: np.ndarray
    masked: np.ndarray
    group: np.ndarray


def control_ids(table: pd.DataFrame) -> np.ndarray:
    """Sorted sirna ids of the control wells of a site or well table.

    Args:
        table: Rows with ``well_type`` and ``sirna``.
    """
    controls = table.loc[table["well_type"] != "treatment", "sirna"].dropna()
    return np.sort(controls.astype(np.int64).unique())


def assign_plate(log_probs: np.ndarray) -> np.ndarray:
    """Column per row maximizing the summed log-probability, each column at most once.

    Args:
        log_probs: ``(n_wells, n_candidates)`` of one plate.

    Returns:
        ``(n_wells,)`` column index per row. With more rows than columns, each column
        is used at most ``ceil(n_wells / n_candidates)`` times.
    """
    n, k = log_probs.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    repeats = max(1, math.ceil(n / k))
    if repeats > 1:
        log.warning(
            "plate has %d wells for %d candidate classes: each used <= %d times", n, k, repeats
        )
    cost = np.tile(log_probs, (1, repeats))
    rows, cols = linear_sum_assignment(cost, maximize=True)
    out = np.empty(n, dtype=np.int64)
    out[rows] = cols % k
    return out


def assign(
    wells: pd.DataFrame,
    log_probs: np.ndarray,
    classes: np.ndarray,
    controls: np.ndarray,
    groups: list[np.ndarray] | None,
    plate_groups: pd.DataFrame | None,
) -> Assignment:
    """The plate step for every plate of ``wells``.

    Args:
        wells: One row per well (``experiment``, ``plate``, ``well_type``, ``sirna``);
            ``sirna`` is read for control wells only.
        log_probs: ``(n_wells, n_classes)`` aligned with ``wells``.
        classes: sirna id of each column.
        controls: sirna ids of the control classes (``control_ids`` of the full table).
        groups: ``treatment_groups`` output; None = no group mask (every treatment class
            is a candidate on every plate, still at most once per plate).
        plate_groups: ``detect_groups`` output (needed with ``groups``).
    """
    n = len(wells)
    labels = np.full(n, -1, dtype=np.int64)
    confidence = np.zeros(n)
    masked = np.full(n, -1, dtype=np.int64)
    group_of = np.full(n, -1, dtype=np.int64)
    treat = (wells["well_type"] == "treatment").to_numpy()
    experiment_of, plate_of = wells["experiment"].to_numpy(), wells["plate"].to_numpy()
    treatment_ids = np.array([c for c in classes if c not in set(controls.tolist())])
    if treat.any() and not len(treatment_ids):
        raise UserError(
            f"the predictions have no column for any treatment class (they predict "
            f"{len(classes)} classes, all controls): a control-only model?"
        )
    all_treatments = class_columns(classes, treatment_ids, "treatment classes")
    chosen = {}
    if groups is not None:
        assert plate_groups is not None, "groups need plate_groups"
        chosen = {(r.experiment, int(r.plate)): int(r.group) for r in plate_groups.itertuples()}
    for experiment, plate in sorted(set(zip(experiment_of, plate_of.tolist(), strict=True))):
        rows = np.flatnonzero(treat & (experiment_of == experiment) & (plate_of == plate))
        if not len(rows):
            continue
        if groups is None:
            columns, g = all_treatments, -1
        else:
            g = chosen[(experiment, plate)]
            columns = class_columns(classes, groups[g], f"classes of treatment group {g}")
        candidates = log_softmax(log_probs[np.ix_(rows, columns)], axis=1)
        picked = assign_plate(candidates)
        labels[rows] = classes[columns[picked]]
        confidence[rows] = np.exp(candidates[np.arange(len(rows)), picked])
        masked[rows] = classes[columns[candidates.argmax(axis=1)]]
        group_of[rows] = g
    result = Assignment(labels, confidence, masked, group_of)
    _label_controls(result, wells, log_probs, classes=classes, controls=controls, is_control=~treat)
    return result


def _label_controls(
    out: Assignment,
    wells: pd.DataFrame,
    log_probs: np.ndarray,
    *,
    classes: np.ndarray,
    controls: np.ndarray,
    is_control: np.ndarray,
) -> None:
    """Known control labels where the table has them, else the best control class.

    Args:
        out: The assignment whose control rows are filled in (in place).
        wells: One row per well (its ``sirna`` is read).
        log_probs: ``(n_wells, n_classes)`` aligned with ``wells``.
        classes: sirna id of each column.
        controls: sirna ids of the control classes.
        is_control: ``(n_wells,)`` True for the control wells.

    Raises:
        UserError: Control wells without a known label, and no control classes.
    """
    labels, confidence, masked = out.labels, out.confidence, out.masked
    rows = np.flatnonzero(is_control)
    if not len(rows):
        return
    known = wells["sirna"].iloc[rows]
    known_mask = known.notna().to_numpy()
    known_ids = known.fillna(-1).to_numpy(dtype=np.int64)
    if known_mask.all():
        best, best_p = known_ids, np.ones(len(rows))
    else:
        columns = class_columns(classes, controls, "control classes")
        if not len(columns):
            raise UserError("control wells without a known label, and no control classes")
        candidates = log_softmax(log_probs[np.ix_(rows, columns)], axis=1)
        best = classes[columns[candidates.argmax(axis=1)]]
        best_p = np.exp(candidates.max(axis=1))
    labels[rows] = np.where(known_mask, known_ids, best)
    confidence[rows] = np.where(known_mask, 1.0, best_p)
    masked[rows] = labels[rows]
