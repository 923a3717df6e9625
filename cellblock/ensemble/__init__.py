"""Ensembling: combine predictions, detect plate groups, assign per plate, report.

Modules, one concept each:

* ``combine``: read predictions stores, check them, merge models and sites per well;
* ``groups``: the treatment groups (from training plates) and each plate's group;
* ``assign``: per-plate ``linear_sum_assignment`` within the group, controls kept;
* ``submission``: Kaggle ``id_code,sirna`` and its validation;
* ``report``: report.json / report.md / plots (profiles: ``cellblock.profiling``);
* ``pseudo``: pseudo labels from an ensemble's output;
* ``steps``: the parts of one run and the ``EnsembleState`` they share;
* ``pipeline``: ``run_ensemble``, all of the above in order.
"""

from cellblock.ensemble.assign import Assignment, assign, assign_plate, control_ids
from cellblock.ensemble.combine import COMBINE_MODES, Combined, combine
from cellblock.ensemble.groups import detect_groups, group_scores, treatment_groups
from cellblock.ensemble.pipeline import run_ensemble
from cellblock.ensemble.pseudo import pseudo_labels, write_pseudo_labels
from cellblock.ensemble.submission import (
    expected_ids,
    make_submission,
    read_submission,
    validate_submission,
    write_submission,
)

__all__ = [
    "COMBINE_MODES",
    "Assignment",
    "Combined",
    "assign",
    "assign_plate",
    "combine",
    "control_ids",
    "detect_groups",
    "expected_ids",
    "group_scores",
    "make_submission",
    "pseudo_labels",
    "read_submission",
    "run_ensemble",
    "treatment_groups",
    "validate_submission",
    "write_pseudo_labels",
    "write_submission",
]
