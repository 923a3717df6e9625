"""``04_ensemble/ensemble.py`` as a function: combine -> plate step -> submission -> report.

Outputs in ``OUT`` (each written atomically; ``report.json`` last, so its presence
means the run finished):

    submission.csv      Kaggle ``id_code,sirna``
    wells.parquet       per well: argmax, masked, assigned label, confidence, group
    profiles.parquet    per-well profiles of every predicted plate, in the profiling
                        convention (``Metadata_*``, ``Cells_CNN_*``; cellblock.profiling)
    report.json, report.md, accuracy_per_*.png, plate_maps.png

The answer key (``sirna`` of test treatment wells) is read only to report accuracy;
the plate step sees the predictions, the training plates' labels (the groups) and the
public control labels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import softmax

import cellblock
from cellblock.atomic import atomic_write_parquet
from cellblock.dataset import PackedDataset
from cellblock.ensemble import report as reporting
from cellblock.ensemble.assign import assign, control_ids
from cellblock.ensemble.combine import combine
from cellblock.ensemble.groups import detect_groups, treatment_groups, true_groups
from cellblock.ensemble.submission import (
    expected_ids,
    make_submission,
    validate_submission,
    write_submission,
)
from cellblock.errors import UserError
from cellblock.metrics import accuracy_breakdown
from cellblock.profiling.align import ALIGNMENTS, DEFAULT_ALIGN
from cellblock.profiling.mapscore import copairs_map
from cellblock.profiling.table import (
    aligned_table,
    feature_columns,
    metadata_columns,
    public_labels,
    read_well_embeddings,
)

__all__ = ["public_labels", "run_ensemble"]  # public_labels: cellblock.profiling.table

log = logging.getLogger(__name__)
META = ["id_code", "experiment", "plate", "well", "row", "col", "cell_type", "split", "well_type"]


def run_ensemble(
    preds: Sequence[Path | str],
    data: Path | str,
    out: Path | str,
    split: str = "test",
    experiments: Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
    mode: str = "mean-logits",
    plate_step: bool = True,
    use_groups: bool = True,
    include_controls: bool = False,
    profile_dim: int = 512,
    align: str = DEFAULT_ALIGN,
    null_size: int = 10000,
) -> dict[str, Any]:
    """Combine predictions, solve the plate assignment, write submission and report.

    Args:
        preds: Prediction folders or ``predictions.zarr`` stores.
        data: The packed dataset they predicted.
        out: Output folder (created).
        split: ``"test"``, ``"train"`` or ``"all"``.
        experiments: Only these experiments of the split.
        weights: Weight per store (None: equal).
        mode: ``"mean-logits"`` or ``"mean-probs"``.
        plate_step: Solve the per-plate assignment (False: plain argmax).
        use_groups: Mask each plate to its detected treatment group.
        include_controls: Put control wells in the submission too (Kaggle did not).
        profile_dim: Widest profile kept; wider (many stores side by side) is reduced to
            its leading principal components.
        align: Alignment of the profiles (``cellblock.profiling.align``).
        null_size: copairs null size of the summary's mAP.

    Returns:
        The report (as written to ``OUT/report.json``).
    """
    if align not in ALIGNMENTS:
        raise UserError(f"--align {align!r}: expected one of {', '.join(ALIGNMENTS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # report.json marks a finished run: a rerun that fails must not leave the old one
    # next to new, partial outputs
    (out / "report.json").unlink(missing_ok=True)
    packed = PackedDataset(data)
    c = combine(preds, packed, split, experiments, weights, mode)
    wells, classes = c.wells, c.classes
    probs = softmax(c.log_probs, axis=1)
    top = probs.argmax(axis=1)
    per_well = wells[META].assign(
        sirna=public_labels(wells).to_numpy(),
        argmax=classes[top],
        argmax_confidence=probs[np.arange(len(top)), top],
    )
    groups, plates, step = None, None, "none (argmax)"
    if plate_step:
        if use_groups:
            groups = treatment_groups(packed.metadata)
            plates = detect_groups(wells, c.log_probs, classes, groups)
        result = assign(wells, c.log_probs, classes, control_ids(packed.metadata), groups, plates)
        per_well = per_well.assign(
            masked=result.masked,
            assigned=result.labels,
            confidence=result.confidence,
            group=result.group,
        )
        step = (
            "group mask + per-plate assignment"
            if groups is not None
            else "per-plate assignment (no group mask)"
        )
    else:
        per_well = per_well.assign(
            assigned=per_well["argmax"], confidence=per_well["argmax_confidence"]
        )
    labels = per_well["assigned"].to_numpy()

    submission = make_submission(wells, labels, include_controls)
    validate_submission(
        submission,
        expected_ids(wells, include_controls),
        int(packed.metadata["sirna"].max()) + 1,
        "the new submission",
    )
    outputs: dict[str, Any] = {
        "submission": str(write_submission(submission, out / "submission.csv"))
    }
    atomic_write_parquet(per_well, out / "wells.parquet")
    outputs["wells"] = str(out / "wells.parquet")

    scored = wells["well_type"] == "treatment"
    truth = wells["sirna"].astype("Int64")  # the answer key: reporting only
    accuracy = {"argmax": accuracy_breakdown(wells[scored], per_well["argmax"][scored])}
    if plate_step:
        if groups is not None:
            accuracy["masked"] = accuracy_breakdown(wells[scored], per_well["masked"][scored])
        accuracy["assigned"] = accuracy_breakdown(wells[scored], labels[scored.to_numpy()])

    profiles = _profiles(preds, packed, per_well, align, profile_dim, null_size)
    atomic_write_parquet(profiles.pop("table"), out / "profiles.parquet")
    outputs["profiles"] = str(out / "profiles.parquet")

    shape = packed.info.plate_shape[:2]
    maps = per_well.assign(truth=truth.to_numpy())
    outputs["plots"] = [
        str(p) if p else None
        for p in (
            reporting.plot_accuracy(
                accuracy, "per_experiment", out / "accuracy_per_experiment.png"
            ),
            reporting.plot_accuracy(accuracy, "per_cell_type", out / "accuracy_per_cell_type.png"),
            reporting.plot_plate_maps(maps, shape, out / "plate_maps.png"),
        )
    ]
    report: dict[str, Any] = {
        "dataset": str(packed.path.resolve()),
        "split": split,
        "experiments": sorted(set(wells["experiment"])),
        "combine": mode,
        "plate_step": step,
        "include_controls": include_controls,
        "n_wells": len(wells),
        "n_scored_wells": int(scored.sum()),
        "n_classes": len(classes),
        "inputs": c.inputs,
        "accuracy": accuracy,
        "accuracy_scope": "treatment wells (the wells Kaggle scored); answer key = sirna column",
        "profiles": {"embedding_dim": int(c.embeddings.shape[1]), **profiles},
        "outputs": outputs,
        "code_version": cellblock.__version__,
    }
    if plates is not None and groups is not None:
        report["groups"] = _group_summary(wells, plates, groups)
    reporting.write_markdown(report, out / "report.md")
    reporting.write_json(report, out / "report.json")
    return report


def _profiles(
    preds: Sequence[Path | str],
    packed: PackedDataset,
    per_well: pd.DataFrame,
    align: str,
    profile_dim: int,
    null_size: int,
) -> dict[str, Any]:
    """profiles.parquet of every plate the stores predicted, and copairs mAP of the split.

    The answer key joins only the in-memory frame the mAP is computed on.
    """
    embeddings = read_well_embeddings(preds, packed, "all")
    assigned = per_well.set_index("id_code")["assigned"]
    predicted = embeddings.wells["id_code"].map(assigned).astype("Int64")
    table = aligned_table(embeddings, align, profile_dim, predicted)
    scored = table["Metadata_id_code"].isin(assigned.index).to_numpy()
    meta = table.loc[scored, metadata_columns(table)].copy()
    meta["Metadata_sirna"] = embeddings.wells.loc[scored, "sirna"].astype("Int64").to_numpy()
    features = table.loc[scored, feature_columns(table)].to_numpy(np.float64)
    scores = {
        kind: copairs_map(meta, features, kind, null_size=null_size)
        for kind in ("activity", "consistency")
    }
    return {
        "table": table,
        "align": align,
        "profile_dim": len(feature_columns(table)),
        "n_wells": len(table),
        "map": scores,
    }


def _group_summary(wells: pd.DataFrame, plates: pd.DataFrame, groups) -> dict[str, Any]:
    actual = true_groups(wells, groups)
    rows = []
    for r in plates.to_dict("records"):
        r["true_group"] = int(actual.get((r["experiment"], r["plate"]), -1))
        rows.append(r)
    known = [r for r in rows if r["true_group"] >= 0]
    return {
        "n_groups": len(groups),
        "group_sizes": [len(g) for g in groups],
        "min_margin": float(plates["margin"].min()) if len(plates) else None,
        "detection_accuracy": (
            float(np.mean([r["group"] == r["true_group"] for r in known])) if known else None
        ),
        "plates": rows,
    }
