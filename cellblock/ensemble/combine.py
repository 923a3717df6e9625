"""Combine predictions stores (models, folds, channel subsets) into one score per well.

Every store must come from the same packed dataset, predict the same classes (their
column order may differ; it is aligned to the first store's) and cover every site of
the selected wells. Sites are then merged into wells:

* ``mean-logits`` (default): the weighted mean of the stores' logits, averaged over the
  well's sites, then ``log_softmax``. Summing logits over sites is what the 1st-place
  RxRx1 solution did; averaging is the same up to a temperature.
* ``mean-probs``: each store's site softmax, weighted mean over stores, averaged over
  the well's sites, then ``log``. Robust when one model is much more confident than
  another.

Embeddings are not averaged (each model has its own feature space): each store's
embeddings are averaged over the well's sites and the stores are concatenated.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import log_softmax, softmax

from cellblock.errors import UserError
from cellblock.screen.sites import select_sites, well_table
from cellblock.store.packed import PackedDataset
from cellblock.store.predictions import PredictionInfo, open_info, read_sites, store_path

__all__ = [
    "COMBINE_MODES",
    "Combined",
    "class_columns",
    "combine",
]

log = logging.getLogger(__name__)
COMBINE_MODES = ("mean-logits", "mean-probs")


@dataclass
class Combined:
    """Well-level scores of one or more predictions stores.

    Args:
        wells: One row per well, sorted by experiment, plate, row, col: the site-table
            columns but ``site`` (``sirna`` is the answer key where the dataset has one;
            use it for reporting only).
        log_probs: ``(n_wells, n_classes)`` float64 log-probabilities, rows sum to 1 in
            probability.
        classes: ``(n_classes,)`` sirna id of each column.
        embeddings: ``(n_wells, D)`` float32, the stores' well-mean embeddings side by side.
        inputs: One dict per store: path, weight and its ``PredictionInfo``.
        mode: The combine mode used.
    """

    wells: pd.DataFrame
    log_probs: np.ndarray
    classes: np.ndarray
    embeddings: np.ndarray
    inputs: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "mean-logits"


def _well_mean(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    counts = np.diff(np.append(starts, len(values)))
    return np.add.reduceat(values, starts, axis=0) / counts[:, None]


def _check_dataset(info: PredictionInfo, path: Path, packed: PackedDataset) -> None:
    """Refuse a store made from another dataset (a copy of ours, or an unreachable path, passes)."""
    recorded = Path(info.dataset)
    if recorded.resolve() == packed.path.resolve():
        return
    meta = recorded / "metadata.parquet"
    if not meta.is_file():
        # e.g. predicted inside a container that mounted the dataset elsewhere
        log.warning(
            "%s: predicted dataset %s is not reachable here; checking plates and wells only",
            path,
            recorded,
        )
        return
    theirs = pd.read_parquet(meta)
    ours = packed.metadata
    same = list(theirs.columns) == list(ours.columns) and theirs.reset_index(drop=True).equals(
        ours.reset_index(drop=True)
    )
    if not same:
        raise UserError(
            f"{path}: predictions of dataset {recorded}, not of {packed.path} (their site "
            f"tables differ); combine stores of one dataset, or pass --data {recorded}"
        )


def _aligned_columns(classes: tuple[int, ...], reference: tuple[int, ...], where: str):
    if classes == reference:
        return None
    if set(classes) != set(reference) or len(classes) != len(reference):
        only_this = sorted(set(classes) - set(reference))
        only_ref = sorted(set(reference) - set(classes))
        raise UserError(
            f"{where}: predicts other classes than the first store ({len(classes)} vs "
            f"{len(reference)}; only here: {only_this[:10]}, only in the first: {only_ref[:10]})"
        )
    position = {c: i for i, c in enumerate(classes)}
    return np.array([position[c] for c in reference])


def _weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != n:
        raise UserError(f"--weights: {len(w)} weights for {n} predictions")
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise UserError(f"--weights: need non-negative numbers with a positive sum, got {list(w)}")
    return w / w.sum()


def _check_class_range(info: PredictionInfo, path: Path, packed: PackedDataset) -> None:
    known = int(packed.metadata["sirna"].max()) + 1
    if min(info.classes) < 0 or max(info.classes) >= known:
        raise UserError(
            f"{path}: classes {min(info.classes)}..{max(info.classes)} outside the "
            f"dataset's labels 0..{known - 1}; predictions of another dataset?"
        )


def class_columns(classes: np.ndarray, members: np.ndarray, what: str) -> np.ndarray:
    """Column index of each of ``members`` in ``classes``; a missing one is a UserError.

    Args:
        classes: sirna id of each prediction column.
        members: sirna ids wanted.
        what: Names ``members`` in the error.
    """
    position = {int(c): i for i, c in enumerate(classes)}
    missing = [int(m) for m in members if int(m) not in position]
    if missing:
        raise UserError(
            f"the predictions have no column for {len(missing)} {what} (e.g. sirna "
            f"{missing[:5]}); they predict {len(classes)} classes — a control-only model, "
            "or predictions of another dataset?"
        )
    return np.array([position[int(m)] for m in members], dtype=np.int64)


def _read_store(
    path: Path, info: PredictionInfo, reference: PredictionInfo, sites: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """A store's logits (columns in ``reference``'s class order) and embeddings of ``sites``.

    Raises:
        UserError: Other classes than ``reference``, an unpredicted site, non-finite logits.
    """
    order = _aligned_columns(info.classes, reference.classes, str(path))
    _, logits, emb = read_sites(path, sites)
    if not np.isfinite(logits).all():
        bad = sites.iloc[int(np.flatnonzero(~np.isfinite(logits).all(axis=1))[0])]
        raise UserError(
            f"{path}: non-finite logits (inf) at {bad['id_code']} site {bad['site']}; "
            "the prediction diverged — rerun it"
        )
    return (logits if order is None else logits[:, order]), emb


def combine(
    preds: Sequence[Path | str],
    packed: PackedDataset | Path | str,
    split: str = "test",
    experiments: Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
    mode: str = "mean-logits",
) -> Combined:
    """Read, check and combine predictions stores into well-level log-probabilities.

    Args:
        preds: Prediction folders (``PRED``) or ``predictions.zarr`` stores.
        packed: The packed dataset they predicted.
        split: Wells to combine: ``"test"``, ``"train"`` or ``"all"``.
        experiments: Only these experiments (None: all of ``split``).
        weights: One non-negative weight per store (normalized here); None = equal.
        mode: ``"mean-logits"`` or ``"mean-probs"`` (see the module docstring).

    Raises:
        UserError: No stores, a store of another dataset, other classes, a missing plate
            or an unpredicted site, bad weights or mode.
    """
    if not preds:
        raise UserError("no predictions given")
    if mode not in COMBINE_MODES:
        raise UserError(f"--combine {mode!r}: expected one of {list(COMBINE_MODES)}")
    if not isinstance(packed, PackedDataset):
        packed = PackedDataset(packed)
    w = _weights(weights, len(preds))
    sites = select_sites(packed.metadata, split, experiments, source=f"dataset {packed.path}")
    wells, starts = well_table(sites)
    reference: PredictionInfo | None = None
    total: np.ndarray | None = None
    embeddings, inputs = [], []
    for pred, weight in zip(preds, w, strict=True):
        path = store_path(pred)
        info = open_info(path)
        _check_dataset(info, path, packed)
        if reference is None:
            reference = info
            _check_class_range(info, path, packed)
        logits, emb = _read_store(path, info, reference, sites)
        scores = logits.astype(np.float64)
        if mode == "mean-probs":
            scores = softmax(scores, axis=1)
        total = weight * scores if total is None else total + weight * scores
        embeddings.append(_well_mean(emb, starts).astype(np.float32))
        inputs.append({"path": str(path), "weight": float(weight), **info.to_json()})
        log.info("read %s: %d sites, %d classes (%s)", path, len(sites), info.n_classes, info.setup)
    assert total is not None and reference is not None
    per_well = _well_mean(total, starts)
    if mode == "mean-logits":
        log_probs = log_softmax(per_well, axis=1)
    else:
        log_probs = np.log(np.clip(per_well, np.finfo(np.float64).tiny, None))
    classes = np.asarray(reference.classes, dtype=np.int64)
    return Combined(wells, log_probs, classes, np.concatenate(embeddings, axis=1), inputs, mode)
