"""Per-channel image statistics of every site: the features of the image-statistics probe.

Fourteen numbers per channel (84 for RxRx1's six), computed on the uint8 site as packed::

    level       mean, std, percentiles 1 10 25 50 75 90 99
    shape       skewness, excess kurtosis of the pixel distribution
    texture     mean |gradient| (fine edges), std of the 4 x 4 block means (coarse
                layout: cell density, clumping), std of the residual after them (fine
                texture: puncta, fibres, chromatin)

No learning, no cells found: what a linear model on these reaches is what the pixels
give away without any representation learning, the floor a CNN should clear.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cellblock.parallel import ordered_map
from cellblock.progress import progress_bar
from cellblock.store.omezarr import downsample
from cellblock.store.packed import PackedDataset

__all__ = ["STATISTICS", "feature_names", "site_statistics", "site_table"]

STATISTICS = (
    "mean", "std", "p01", "p10", "p25", "p50", "p75", "p90", "p99",
    "skew", "kurtosis", "gradient", "coarse_std", "fine_std",
)  # fmt: skip
_PERCENTILES = (1, 10, 25, 50, 75, 90, 99)
_BLOCK = 4  # px: the coarse scale of the texture statistics


def feature_names(channels: list[str]) -> list[str]:
    """``["<channel>_<statistic>", ...]``, channel-major, as ``site_statistics`` orders them."""
    return [f"{c}_{s}" for c in channels for s in STATISTICS]


def site_statistics(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` uint8 -> ``(C * 14,)`` float64 statistics, channel-major.

    Args:
        image: One site.
    """
    px = image.reshape(len(image), -1).astype(np.float64)
    mean = px.mean(1)
    centred = px - mean[:, None]
    std = np.sqrt((centred**2).mean(1))
    safe = np.where(std > 0, std, 1.0)
    skew = (centred**3).mean(1) / safe**3
    kurtosis = (centred**4).mean(1) / safe**4 - 3.0
    pct = np.percentile(px, _PERCENTILES, axis=1).T
    img = image.astype(np.float64)
    gradient = (
        np.abs(np.diff(img, axis=1)).mean((1, 2)) + np.abs(np.diff(img, axis=2)).mean((1, 2))
    ) / 2
    coarse = downsample(image, _BLOCK).astype(np.float64)
    up = np.repeat(np.repeat(coarse, _BLOCK, 1), _BLOCK, 2)[:, : img.shape[1], : img.shape[2]]
    columns = [mean[:, None], std[:, None], pct, skew[:, None], kurtosis[:, None],
               gradient[:, None], coarse.reshape(len(image), -1).std(1)[:, None],
               (img - up).reshape(len(image), -1).std(1)[:, None]]  # fmt: skip
    return np.concatenate(columns, axis=1).reshape(-1)


def _site_rows(args: tuple[str, list[tuple[str, int, int, int, int]]]) -> np.ndarray:
    path, sites = args
    packed = PackedDataset(path)
    return np.stack([site_statistics(packed.read_site(*site)) for site in sites])


def site_table(
    dataset: Path | str, rows: pd.DataFrame | None = None, workers: int = 1, progress: bool = True
) -> pd.DataFrame:
    """Statistics of every site of ``rows`` (default: the whole dataset).

    Args:
        dataset: The packed dataset folder.
        rows: Site-table rows (``experiment, plate, row, col, site``, ...); their
            columns are kept in front of the statistics.
        workers: Processes reading and computing (one job per plate).
        progress: Show a progress bar.

    Returns:
        ``rows`` with one column per feature (``feature_names``), in ``rows``' order.
    """
    packed = PackedDataset(dataset)
    rows = packed.metadata if rows is None else rows
    keys = ["experiment", "plate", "row", "col", "site"]
    jobs, order = [], []
    for _, plate in rows.groupby(["experiment", "plate"], sort=True):
        sites = [
            (str(e), int(p), int(r), int(c), int(s))
            for e, p, r, c, s in plate[keys].itertuples(index=False)
        ]
        jobs.append((str(dataset), sites))
        order.append(plate.index)
    parts = []
    with progress_bar(
        total=len(rows), unit="site", desc="image statistics", disable=not progress
    ) as bar:
        for index, values in zip(order, ordered_map(_site_rows, jobs, workers), strict=True):
            parts.append(pd.DataFrame(values, index=index))
            bar.update(len(index))
    names = feature_names(list(packed.info.channels))
    stats = pd.concat(parts).set_axis(names, axis=1).loc[rows.index]
    return pd.concat([rows, stats], axis=1)
