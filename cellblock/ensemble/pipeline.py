"""``04_ensemble/ensemble.py`` as a function: combine -> plate step -> submission -> report.

Outputs in ``OUT`` (each written atomically; one writer at a time, ``OUT/ensemble.lock``;
an earlier run's outputs cleared first; ``finished.json``, the completion record with
every output's checksum, last: ``cellblock.finished``):

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

import cellblock
from cellblock.atomic import atomic_write_parquet
from cellblock.ensemble import report as reporting
from cellblock.ensemble.steps import (
    EnsembleState,
    assign_plates,
    combined,
    group_summary,
    keep_argmax,
    plot,
    step_accuracy,
    write_answers,
)
from cellblock.errors import UserError
from cellblock.finished import output_folder
from cellblock.profiling.align import ALIGNMENTS, DEFAULT_ALIGN
from cellblock.profiling.mapscore import copairs_map
from cellblock.profiling.table import (
    aligned_table,
    feature_columns,
    metadata_columns,
    public_labels,
    read_well_embeddings,
)
from cellblock.store.packed import PackedDataset

__all__ = ["OUTPUTS", "public_labels", "run_ensemble"]  # public_labels: profiling.table

log = logging.getLogger(__name__)

# every file a run may write in OUT (an earlier run's are cleared before a run writes)
OUTPUTS = (
    "submission.csv",
    "wells.parquet",
    "profiles.parquet",
    "report.json",
    "report.md",
    "accuracy_per_experiment.png",
    "accuracy_per_cell_type.png",
    "plate_maps.png",
)


def run_ensemble(
    preds: Sequence[Path | str],
    data: Path | str,
    out: Path | str,
    *,
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
        out: Output folder (created; locked while written, an earlier run's outputs
            cleared).
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

    Raises:
        FolderBusyError: Another ensemble writes ``out``.
    """
    if align not in ALIGNMENTS:
        raise UserError(f"--align {align!r}: expected one of {', '.join(ALIGNMENTS)}")
    with output_folder(out, "ensemble", OUTPUTS) as folder:
        return _run(
            preds,
            data,
            folder,
            split=split,
            experiments=experiments,
            weights=weights,
            mode=mode,
            plate_step=plate_step,
            use_groups=use_groups,
            include_controls=include_controls,
            profile_dim=profile_dim,
            align=align,
            null_size=null_size,
        )


def _run(
    preds: Sequence[Path | str],
    data: Path | str,
    out: Path,
    *,
    split: str,
    experiments: Sequence[str] | None,
    weights: Sequence[float] | None,
    mode: str,
    plate_step: bool,
    use_groups: bool,
    include_controls: bool,
    profile_dim: int,
    align: str,
    null_size: int,
) -> dict[str, Any]:
    """``run_ensemble`` in its output folder, held and cleared (arguments: the same)."""
    run = combined(preds, PackedDataset(data), out, split=split, experiments=experiments,
                   weights=weights, mode=mode)  # fmt: skip
    if plate_step:
        assign_plates(run, use_groups=use_groups)
    else:
        keep_argmax(run)
    write_answers(run, include_controls=include_controls)
    accuracy = step_accuracy(run, plate_step=plate_step)
    profiles = _profiles(preds, run, align=align, profile_dim=profile_dim, null_size=null_size)
    plot(run, accuracy)
    report = _report(
        run, accuracy, profiles, split=split, mode=mode, include_controls=include_controls
    )
    reporting.write_markdown(report, out / "report.md")
    reporting.write_json(report, out / "report.json")
    return report


def _report(
    run: EnsembleState,
    accuracy: dict[str, Any],
    profiles: dict[str, Any],
    *,
    split: str,
    mode: str,
    include_controls: bool,
) -> dict[str, Any]:
    """The report of a finished run (``report.json``).

    Args:
        run: The run, its outputs written.
        accuracy: ``step_accuracy``'s result.
        profiles: ``_profiles``'s result, its table popped.
        split: The split ensembled.
        mode: The combine mode.
        include_controls: Whether the submission holds control wells.
    """
    wells = run.combined.wells
    report: dict[str, Any] = {
        "dataset": str(run.packed.path.resolve()),
        "split": split,
        "experiments": sorted(set(wells["experiment"])),
        "combine": mode,
        "plate_step": run.step,
        "include_controls": include_controls,
        "n_wells": len(wells),
        "n_scored_wells": int((wells["well_type"] == "treatment").sum()),
        "n_classes": len(run.combined.classes),
        "inputs": run.combined.inputs,
        "accuracy": accuracy,
        "accuracy_scope": "treatment wells (the wells Kaggle scored); answer key = sirna column",
        "profiles": {"embedding_dim": int(run.combined.embeddings.shape[1]), **profiles},
        "outputs": run.outputs,
        "code_version": cellblock.__version__,
    }
    if run.plates is not None and run.groups is not None:
        report["groups"] = group_summary(wells, run.plates, run.groups)
    return report


def _profiles(
    preds: Sequence[Path | str],
    run: EnsembleState,
    *,
    align: str,
    profile_dim: int,
    null_size: int,
) -> dict[str, Any]:
    """Write profiles.parquet of every plate the stores predicted; copairs mAP of the split.

    Args:
        preds: The predictions stores.
        run: The run after its plate step (its ``outputs`` gains the parquet's path).
        align: Alignment of the profiles.
        profile_dim: Widest profile kept.
        null_size: copairs null size.

    Returns:
        The report's ``profiles`` (but ``embedding_dim``). The answer key joins only the
        in-memory frame the mAP is computed on.
    """
    embeddings = read_well_embeddings(preds, run.packed, "all")
    assigned = run.per_well.set_index("id_code")["assigned"]
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
    atomic_write_parquet(table, run.out / "profiles.parquet")
    run.outputs["profiles"] = str(run.out / "profiles.parquet")
    return {
        "align": align,
        "profile_dim": len(feature_columns(table)),
        "n_wells": len(table),
        "map": scores,
    }
