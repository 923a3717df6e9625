"""Rotation invariance: how alike a model embeds a site under the 8 D4 transforms.

Cells have no up or down, so a good embedding of a field hardly changes when the field
is rotated or flipped. The model of a predictions store (its run and checkpoint
iteration, from the store's provenance) embeds a fixed sample of the benchmarked sites
once per dihedral view (the TTA machinery, one view at a time: ``Predictor.predict_rows
(rows, transforms=(k,))``; flips only on non-square sites); the score is the mean cosine
similarity of each non-identity view's embedding to the identity view's, after
subtracting the sample's mean identity embedding (raw features share a large common
direction that would make any two sites look alike). 1 = invariant.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellblock.errors import UserError
from cellblock.inference import Predictor
from cellblock.runs import run_checkpoint
from cellblock.store.packed import PackedDataset
from cellblock.store.predictions import open_info, store_path
from cellblock.tta import tta_transforms

__all__ = ["rotation_invariance"]

log = logging.getLogger(__name__)


def rotation_invariance(
    pred: Path | str,
    packed: PackedDataset,
    sites: pd.DataFrame,
    n_sites: int = 64,
    seed: int = 0,
    device: str = "auto",
) -> dict[str, Any] | None:
    """Mean cosine similarity of a store's model's embeddings across D4 views.

    Args:
        pred: Predictions folder or store (its run must be reachable from here).
        packed: The dataset it predicted.
        sites: Site-table rows to sample from (index labels of ``packed.metadata``).
        n_sites: Sites sampled (fewer if ``sites`` has fewer).
        seed: Seed of the sample.
        device: Where the model runs (``"auto"``, ``"cpu"``, ``"cuda"``...).

    Returns:
        ``{"mean_cosine", "views", "sites", "checkpoint"}``, or None when the store's
        run or checkpoint is not reachable (a warning says why).
    """
    info = open_info(store_path(pred))
    try:
        checkpoint = run_checkpoint(info.run, info.iteration)
    except UserError as err:
        log.warning("%s: rotation invariance not measured: %s", pred, err)
        return None
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(sites), size=min(n_sites, len(sites)), replace=False))
    rows = sites.index[chosen]
    transforms = tta_transforms("d4" if _square(packed) else "flips", packed.info.image_size)
    predictor = Predictor(checkpoint, packed, "none", batch_size=64, device=device)
    views = np.stack([predictor.predict_rows(rows, (k,))[1] for k in transforms]).astype(np.float64)
    views -= views[0].mean(axis=0)
    views /= np.linalg.norm(views, axis=2, keepdims=True) + 1e-12
    cosine = (views[1:] * views[0][None]).sum(axis=2)
    return {
        "mean_cosine": float(cosine.mean()),
        "views": len(transforms),
        "sites": len(rows),
        "checkpoint": str(checkpoint),
    }


def _square(packed: PackedDataset) -> bool:
    height, width = packed.info.image_size
    return height == width
