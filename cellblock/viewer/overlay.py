"""Per-well predictions on a plate: predicted vs true treatment, coloured correct / wrong.

A source is either

* a predictions store (``PRED`` or ``PRED/predictions.zarr``, written by 03_predict):
  each well's call is the argmax of its sites' softmax probabilities, averaged
  (``confidence`` is that mean probability); or
* an ensemble output (``OUT`` holding ``submission.csv``, or the CSV itself), Kaggle
  format ``id_code,sirna``: the calls after plate assignment.

The truth is the dataset's ``sirna`` (test wells have it when the raw tree carried
``test_labels.csv``). ``calls_layer`` turns the calls into an annotation layer with one
box per well and the typed properties ``predicted``, ``true``, ``correct`` and
``confidence`` (store sources only), so the values are in the viewer state itself.
"""

from __future__ import annotations

from pathlib import Path

import neuroglancer
import numpy as np
import pandas as pd

from cellblock.errors import UserError
from cellblock.finished import require_finished
from cellblock.screen.plates import plate_key
from cellblock.store.packed import PackedDataset
from cellblock.store.predictions import read_sites, store_path
from cellblock.viewer.layers import TileNote, properties, tile_layer
from cellblock.viewer.mosaic import TileGrid

__all__ = ["CALL_COLUMNS", "CORRECT", "calls_layer", "load_calls", "summarize_calls"]

CALL_COLUMNS = ["well", "row", "col", "predicted", "true", "correct", "confidence"]
# ``correct`` property values (uint8 in the viewer state).
CORRECT = {"wrong": 0, "correct": 1, "unknown": 2}
UNKNOWN = -1  # ``predicted`` / ``true`` of a well without one

CALLS_SHADER = """
void main() {
  uint c = prop_correct();
  vec3 rgb = c == 1u ? vec3(0.1, 0.95, 0.2) : (c == 0u ? vec3(1.0, 0.1, 0.1) : vec3(0.6));
  setColor(vec4(rgb, 1.0));
  setBoundingBoxBorderWidth(2.0);
  setBoundingBoxFillColor(vec4(rgb, 0.25));  // a tint: failing regions show at any zoom
}
"""


def _plate_wells(packed: PackedDataset, experiment: str, plate: int) -> pd.DataFrame:
    """One row per imaged well of the plate: well, row, col, id_code, true sirna."""
    meta = packed.metadata
    sites = meta[(meta["experiment"] == experiment) & (meta["plate"] == plate)]
    wells = sites.groupby(["row", "col"], as_index=False).first()
    return wells[["well", "row", "col", "id_code", "sirna"]].rename(columns={"sirna": "true"})


def _from_store(pred: Path, packed: PackedDataset, experiment: str, plate: int) -> pd.DataFrame:
    meta = packed.metadata
    sites = meta[(meta["experiment"] == experiment) & (meta["plate"] == plate)]
    info, logits, _ = read_sites(pred, sites)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    mean = pd.DataFrame(probs).groupby([sites["row"].to_numpy(), sites["col"].to_numpy()]).mean()
    best = mean.to_numpy().argmax(axis=1)
    classes = np.asarray(info.classes)
    return pd.DataFrame(
        {
            "row": mean.index.get_level_values(0).astype(int),
            "col": mean.index.get_level_values(1).astype(int),
            "predicted": classes[best],
            "confidence": mean.to_numpy().max(axis=1),
        }
    )


def _from_submission(path: Path, wells: pd.DataFrame, key: str) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable CSV ({err})") from None
    missing = {"id_code", "sirna"} - set(table.columns)
    if missing:
        raise UserError(f"{path}: column(s) {sorted(missing)} missing (Kaggle id_code,sirna)")
    answer = table.drop_duplicates("id_code").set_index("id_code")["sirna"]
    mine = wells[wells["id_code"].isin(answer.index)]
    if mine.empty:
        raise UserError(f"{path}: no wells of plate {key}")
    predicted = pd.to_numeric(mine["id_code"].map(answer), errors="coerce")
    if predicted.isna().any():
        bad = mine["id_code"][predicted.isna()].iloc[0]
        raise UserError(f"{path}: sirna of {bad} is not an integer")
    return pd.DataFrame(
        {
            "row": mine["row"],
            "col": mine["col"],
            "predicted": predicted.astype(int),
            "confidence": np.nan,
        }
    )


def load_calls(
    source: Path | str, packed: PackedDataset, experiment: str, plate: int
) -> pd.DataFrame:
    """Per-well calls of one plate from a predictions store or an ensemble output.

    Args:
        source: ``PRED`` (or its ``predictions.zarr``), an ensemble ``OUT`` folder with
            ``submission.csv``, or such a CSV.
        packed: The dataset the plate belongs to (well positions, truth).
        experiment: e.g. ``"HEPG2-01"``.
        plate: 1-based plate number.

    Returns:
        ``CALL_COLUMNS``, one row per called well: ``predicted`` / ``true`` sirna ids
        (``true`` is ``-1`` when unknown), ``correct`` one of ``CORRECT``'s keys,
        ``confidence`` the mean probability (NaN for submissions).
    """
    source, key = Path(source), plate_key(experiment, plate)
    wells = _plate_wells(packed, experiment, plate)
    if source.is_file() and source.suffix == ".csv":
        require_finished(source.parent, "ensemble")  # an ensemble's CSV: a finished run's
        calls = _from_submission(source, wells, key)
    elif (source / "submission.csv").is_file():
        require_finished(source, "ensemble")
        calls = _from_submission(source / "submission.csv", wells, key)
    elif store_path(source).is_dir():
        calls = _from_store(source, packed, experiment, plate)
    else:
        raise UserError(
            f"{source}: neither a predictions store (predictions.zarr) nor an ensemble "
            "output (submission.csv)"
        )
    out = calls.merge(wells, on=["row", "col"], how="left")
    out["true"] = out["true"].astype("Int64").fillna(UNKNOWN).astype(int)
    out["predicted"] = out["predicted"].astype(int)
    out["correct"] = np.where(
        out["true"] == UNKNOWN,
        "unknown",
        np.where(out["predicted"] == out["true"], "correct", "wrong"),
    )
    out["confidence"] = out["confidence"].astype(float)
    return out.sort_values(["row", "col"])[CALL_COLUMNS].reset_index(drop=True)


def summarize_calls(calls: pd.DataFrame) -> str:
    """``"42/60 wells correct (70.0%), 3 without a known answer"``."""
    known = calls[calls["correct"] != "unknown"]
    right = int((known["correct"] == "correct").sum())
    text = f"{right}/{len(known)} wells correct"
    if len(known):
        text += f" ({100 * right / len(known):.1f}%)"
    if len(known) < len(calls):
        text += f", {len(calls) - len(known)} without a known answer"
    return text


def calls_layer(
    grid: TileGrid, calls: pd.DataFrame, pixel_size_um: float | None = None
) -> neuroglancer.LocalAnnotationLayer:
    """One box per called well, outlined and tinted green when correct, red when wrong."""
    # Submissions carry no probabilities; NaN is not valid JSON, so the property is left out.
    with_confidence = bool(calls["confidence"].notna().any())
    ids = ["predicted", "true", "correct", "confidence"][: 4 if with_confidence else 3]
    specs = properties(*ids, types={"confidence": "float32"}, enums={"correct": CORRECT})
    notes = []
    for call in calls.itertuples(index=False):
        true = "unknown" if call.true == UNKNOWN else str(call.true)
        props: list[float] = [int(call.predicted), int(call.true), CORRECT[call.correct]]
        confidence = ""
        if with_confidence:
            value = -1.0 if np.isnan(call.confidence) else float(call.confidence)
            props.append(value)
            confidence = f", p={value:.2f}"
        notes.append(
            TileNote(
                id=call.well,
                row=int(call.row),
                col=int(call.col),
                description=f"{call.well}: predicted {call.predicted}, true {true} "
                f"({call.correct}{confidence})",
                props=props,
            )
        )
    return tile_layer(grid, notes, specs, CALLS_SHADER, pixel_size_um)
