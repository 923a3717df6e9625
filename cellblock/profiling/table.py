"""Well profiles in the image-based profiling convention, from predictions stores.

One row per well (its sites averaged), for every plate the stores predicted (any split),
laid out as pycytominer, copairs and the Cell Painting Gallery expect:

* metadata columns prefixed ``Metadata_``: ``id_code``, ``plate`` (a plate barcode,
  ``{experiment}_{plate}``, unique in the screen), ``plate_number`` (RxRx1's 1-4),
  ``experiment``, ``well``, ``row``, ``col``, ``cell_type``, ``split``, ``well_type``,
  ``sirna`` where the public tables give it (training wells and controls; NA for test
  treatments: the answer key is joined only by evaluation code, ``answer_key``) and,
  from the ensemble, ``predicted`` (its assigned label, NA outside its split);
* one feature column per embedding dimension, ``Cells_CNN_0000``...: pycytominer infers
  features by CellProfiler compartment prefix (``Cells``, ``Nuclei``, ``Cytoplasm``), so
  with this prefix ``normalize(profiles)`` and ``feature_select(profiles)`` run with
  their defaults; a well embedding of whole-cell images reads as a Cells measurement.

Several stores (models, folds) are concatenated side by side (each has its own feature
space) and, when wider than ``profile_dim``, reduced to their leading principal components.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellblock.errors import UserError
from cellblock.profiling.align import DEFAULT_ALIGN, align_profiles
from cellblock.screen.sites import SITE_ORDER, check_split, plate_keys, well_table
from cellblock.store.packed import PackedDataset
from cellblock.store.predictions import predicted_plates, read_sites, store_path

__all__ = [
    "PREFIX",
    "WellEmbeddings",
    "aligned_table",
    "answer_key",
    "feature_columns",
    "metadata_columns",
    "profile_table",
    "public_labels",
    "read_well_embeddings",
    "reduce_width",
]

log = logging.getLogger(__name__)
PREFIX = "Cells_CNN_"
_META = ["id_code", "plate", "plate_number", "experiment", "well", "row", "col",
         "cell_type", "split", "well_type"]  # fmt: skip


@dataclass
class WellEmbeddings:
    """Well-mean embeddings of one or more stores over the plates they all predicted.

    Args:
        wells: One row per well (the site table's columns but ``site``; ``sirna`` is the
            answer key where the dataset has one: evaluation only), sorted.
        embeddings: ``(n_wells, D)`` float32, the stores side by side.
        inputs: One dict per store: its path and ``PredictionInfo``.
    """

    wells: pd.DataFrame
    embeddings: np.ndarray
    inputs: list[dict[str, Any]] = field(default_factory=list)


def read_well_embeddings(
    preds: Sequence[Path | str], packed: PackedDataset | Path | str, split: str = "all"
) -> WellEmbeddings:
    """Read the stores' embeddings of every plate that all of them predicted.

    Args:
        preds: Prediction folders or ``predictions.zarr`` stores.
        packed: The packed dataset they predicted.
        split: Only plates of this split (``"test"``, ``"train"``; ``"all"``: every one).

    Raises:
        UserError: No stores, a bad split, or no plate predicted by every store.
    """
    if not preds:
        raise UserError("no predictions given")
    check_split(split)
    if not isinstance(packed, PackedDataset):
        packed = PackedDataset(packed)
    paths = [store_path(p) for p in preds]
    plates = [set(predicted_plates(p)) for p in paths]
    common = set.intersection(*plates)
    if any(p != common for p in plates):
        log.warning("the stores predicted different plates: profiling the %d they share",
                    len(common))  # fmt: skip
    table = packed.metadata
    keys = plate_keys(table)
    chosen = keys.isin(common) & ((table["split"] == split) if split != "all" else True)
    if not chosen.any():
        raise UserError(
            f"{paths[0]}: no plate of split {split!r} predicted by every store "
            f"(first store has {sorted(plates[0])[:4]}...)"
        )
    sites = table[chosen].sort_values(SITE_ORDER)
    sites = sites.reset_index(drop=True)
    wells, starts = well_table(sites)
    counts = np.diff(np.append(starts, len(sites)))[:, None]
    blocks, inputs = [], []
    for path in paths:
        info, _, emb = read_sites(path, sites)
        blocks.append((np.add.reduceat(emb, starts, axis=0) / counts).astype(np.float32))
        inputs.append({"path": str(path), **info.to_json()})
    n_plates = len(set(keys[chosen]))
    log.info("profiles: %d wells of %d plates from %d store(s)", len(wells), n_plates, len(paths))
    return WellEmbeddings(wells, np.concatenate(blocks, axis=1), inputs)


def public_labels(wells: pd.DataFrame) -> pd.Series:
    """Labels a user may see: training wells and controls; NA for test treatments.

    Args:
        wells: One row per well (``split``, ``well_type``, ``sirna``).
    """
    hidden = (wells["split"] == "test") & (wells["well_type"] == "treatment")
    return wells["sirna"].astype("Int64").mask(hidden)


def answer_key(wells: pd.DataFrame) -> pd.Series:
    """The true label of every well (the test answer key included): evaluation only.

    Args:
        wells: One row per well with the dataset's ``sirna`` column.
    """
    return wells["sirna"].astype("Int64")


def reduce_width(embeddings: np.ndarray, max_dim: int, seed: int = 0) -> np.ndarray:
    """At most ``max_dim`` columns: the leading principal components when wider.

    Embeddings of many stores side by side (5 folds x 6 channel subsets x 1,024) would
    make a table no one can use; a randomized SVD (Halko et al., two power iterations)
    keeps the directions of largest variance at O(n D k) cost.

    Args:
        embeddings: ``(n_wells, D)``.
        max_dim: Width kept; narrower input is returned unchanged.
        seed: Seed of the random projection (same seed, same profiles).
    """
    n, d = embeddings.shape
    if d <= max_dim:
        return embeddings
    x = embeddings.astype(np.float64) - embeddings.mean(axis=0)
    k = min(max_dim, n)
    y = x @ np.random.default_rng(seed).normal(size=(d, min(k + 10, d)))
    for _ in range(2):  # power iterations sharpen the spectrum
        z = np.linalg.qr(x.T @ np.linalg.qr(y)[0])[0]
        y = x @ z
    q = np.linalg.qr(y)[0]
    _, _, vt = np.linalg.svd(q.T @ x, full_matrices=False)
    log.info("profiles: %d embedding columns reduced to %d principal components", d, k)
    return (x @ vt[:k].T).astype(np.float32)


def profile_table(
    wells: pd.DataFrame, features: np.ndarray, predicted: pd.Series | None = None
) -> pd.DataFrame:
    """The profiling-convention table: ``Metadata_*`` columns, then ``Cells_CNN_*``.

    Args:
        wells: One row per well (``WellEmbeddings.wells``).
        features: ``(n_wells, D)`` aligned with ``wells``.
        predicted: A label per well (NA where none), e.g. the ensemble's assignment.
    """
    if len(features) != len(wells):
        raise ValueError(f"{len(features)} profiles for {len(wells)} wells")
    derived = {
        "plate": wells["experiment"].astype(str) + "_" + wells["plate"].astype(str),
        "plate_number": wells["plate"],
    }
    columns: dict[str, Any] = {
        f"Metadata_{k}": (derived[k] if k in derived else wells[k]).to_numpy() for k in _META
    }
    columns["Metadata_sirna"] = public_labels(wells).to_numpy()
    if predicted is not None:
        columns["Metadata_predicted"] = pd.array(predicted, dtype="Int64")
    width = max(4, len(str(features.shape[1] - 1)))
    for i in range(features.shape[1]):
        columns[f"{PREFIX}{i:0{width}d}"] = features[:, i].astype(np.float32)
    return pd.DataFrame(columns)


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The feature columns of a profile table (``Cells_CNN_*``).

    Args:
        table: A ``profile_table``, or a table read back from ``profiles.parquet``.

    Raises:
        UserError: The table has no feature column.
    """
    names = [c for c in table.columns if str(c).startswith(PREFIX)]
    if not names:
        raise UserError(f"profile table: no {PREFIX}* feature columns")
    return names


def metadata_columns(table: pd.DataFrame) -> list[str]:
    """The ``Metadata_*`` columns of a profile table.

    Args:
        table: A profile table.
    """
    return [c for c in table.columns if str(c).startswith("Metadata_")]


def aligned_table(
    embeddings: WellEmbeddings,
    align: str = DEFAULT_ALIGN,
    profile_dim: int = 512,
    predicted: pd.Series | None = None,
) -> pd.DataFrame:
    """``profile_table`` of ``embeddings``, reduced to ``profile_dim`` and aligned.

    Args:
        embeddings: ``read_well_embeddings`` output.
        align: An ``align.ALIGNMENTS`` method (fitted on this table's control wells).
        profile_dim: Widest profile kept (wider: leading principal components).
        predicted: A label per well, or None.
    """
    features = reduce_width(embeddings.embeddings, profile_dim)
    table = profile_table(embeddings.wells, features, predicted)
    names = feature_columns(table)
    table[names] = align_profiles(table, table[names].to_numpy(), align)
    return table
