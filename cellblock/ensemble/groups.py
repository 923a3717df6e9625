"""The plate leak: which treatment group each plate carries.

RxRx1's treatments fall into 4 disjoint groups; every plate holds exactly one group,
and an experiment's 4 plates hold the 4 groups (in some rotation). The groups are
learned from the *training* plates' labels (``cellblock.screen.metadata.plate_groups``); a
plate's group is then inferred from the predictions alone:

    score[plate, g] = mean log P(class | well) of the best one-to-one matching of the
                      plate's treatment wells to g's classes

with P renormalized over the treatment classes (the wells are known to be treatments).
Within an experiment, plates carry different groups, so the plate-vs-group choice is a
linear assignment on ``score`` (``scipy.optimize.linear_sum_assignment``); with more
plates than groups each plate simply takes its best group.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp

from cellblock.ensemble.assign import assign_plate
from cellblock.ensemble.combine import class_columns
from cellblock.errors import UserError
from cellblock.screen.metadata import plate_groups

__all__ = ["detect_groups", "group_scores", "treatment_groups", "true_groups"]

log = logging.getLogger(__name__)


def treatment_groups(table: pd.DataFrame) -> list[np.ndarray]:
    """The disjoint treatment groups, from the labels of the training plates only.

    Args:
        table: The full site table (test rows, answer key included, are ignored).

    Returns:
        Sorted sirna ids of each group, groups ordered by their smallest id.

    Raises:
        UserError: The dataset has no labelled training treatment wells.
    """
    train = table[(table["split"] == "train") & (table["well_type"] == "treatment")]
    if train["sirna"].notna().sum() == 0:
        raise UserError(
            "no labelled training plates: the treatment groups cannot be learned "
            "(pass --no-groups to assign without the group mask)"
        )
    return [np.array(sorted(g), dtype=np.int64) for g in plate_groups(train)]


def group_scores(log_probs: np.ndarray, columns: list[np.ndarray]) -> np.ndarray:
    """How well each group explains a plate's treatment wells, each treatment used once.

    Per group, the best assignment of the wells to the group's classes
    (``linear_sum_assignment``) and its mean log-probability: the plate's likelihood
    under "this group, each member once", the same model the assignment then solves.
    On the demo it picks the right group more often from few wells than the mean
    log-probability of group membership (9% vs 12% wrong on half plates).

    Args:
        log_probs: ``(n_wells, n_classes)`` of one plate's treatment wells.
        columns: Column indices of each group's classes.

    Returns:
        ``(n_groups,)`` scores (higher is more likely), each <= 0.
    """
    if len(log_probs) == 0:
        return np.zeros(len(columns))
    # renormalized over the treatment classes: the wells are known to be treatments
    union = np.concatenate(columns)
    lp = log_probs[:, union] - logsumexp(log_probs[:, union], axis=1, keepdims=True)
    out, start = [], 0
    for c in columns:
        block = lp[:, start : start + len(c)]
        start += len(c)
        out.append(block[np.arange(len(block)), assign_plate(block)].mean())
    return np.array(out)


def detect_groups(
    wells: pd.DataFrame, log_probs: np.ndarray, classes: np.ndarray, groups: list[np.ndarray]
) -> pd.DataFrame:
    """Each plate's treatment group, from the predictions of its treatment wells.

    Args:
        wells: One row per well (``experiment``, ``plate``, ``well_type``).
        log_probs: ``(n_wells, n_classes)`` aligned with ``wells``.
        classes: sirna id of each column.
        groups: ``treatment_groups`` output.

    Returns:
        One row per plate: ``experiment``, ``plate``, ``group`` (index into ``groups``),
        ``margin`` (its score minus the best other group's), ``score_<g>`` per group.
    """
    columns = [
        class_columns(classes, g, f"classes of treatment group {i}") for i, g in enumerate(groups)
    ]
    treat = (wells["well_type"] == "treatment").to_numpy()
    experiment_of, plate_of = wells["experiment"].to_numpy(), wells["plate"].to_numpy()
    rows = []
    for experiment in sorted(set(experiment_of)):
        plates = sorted(set(plate_of[experiment_of == experiment].tolist()))
        scores = np.stack(
            [
                group_scores(
                    log_probs[treat & (experiment_of == experiment) & (plate_of == p)], columns
                )
                for p in plates
            ]
        )
        if len(plates) <= len(groups):
            # an experiment's plates carry different groups: best joint choice
            plate_idx, group_idx = linear_sum_assignment(scores, maximize=True)
            chosen = dict(zip(plate_idx.tolist(), group_idx.tolist(), strict=True))
        else:
            log.warning(
                "%s has %d plates but there are %d groups; choosing each plate's best group",
                experiment,
                len(plates),
                len(groups),
            )
            chosen = dict(enumerate(scores.argmax(axis=1).tolist()))
        for i, plate in enumerate(plates):
            g = chosen[i]
            others = np.delete(scores[i], g)
            rows.append(
                {
                    "experiment": experiment,
                    "plate": int(plate),
                    "group": int(g),
                    "margin": float(scores[i, g] - others.max()) if len(others) else 0.0,
                    **{f"score_{k}": float(s) for k, s in enumerate(scores[i])},
                }
            )
    return pd.DataFrame(rows)


def true_groups(wells: pd.DataFrame, groups: list[np.ndarray]) -> pd.Series:
    """Each plate's group by its known labels (majority vote), for reporting only.

    Args:
        wells: One row per well with the answer key in ``sirna`` (NA: unknown).
        groups: ``treatment_groups`` output.

    Returns:
        Group index per ``(experiment, plate)``; -1 where the plate has no known label.
    """
    member = {int(s): g for g, members in enumerate(groups) for s in members}
    treat = wells[(wells["well_type"] == "treatment") & wells["sirna"].notna()]
    out = {}
    for (experiment, plate), part in wells.groupby(["experiment", "plate"], sort=True):
        labels = treat.loc[treat.index.intersection(part.index), "sirna"].astype(int)
        votes = pd.Series([member.get(int(s), -1) for s in labels], dtype=np.int64)
        out[(experiment, int(plate))] = int(votes.mode().iloc[0]) if len(votes) else -1
    return pd.Series(out, dtype=np.int64)
