"""Per-channel normalization of uint8 sites from the pack's plate statistics.

``pack`` stores per plate and channel the mean and (population) std over all imaged
wells and over negative-control wells, with the pixel count. Experiment and global
statistics pool those exactly: with ``n_i`` pixels, mean ``m_i`` and std ``s_i`` per
plate, ``m = sum(n_i m_i) / N`` and ``var = sum(n_i (s_i^2 + m_i^2)) / N - m^2`` —
the statistics of all pooled pixels, which averaging the stds would not give.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from cellblock.dataset import PackedDataset

__all__ = ["Normalizer", "pool_stats"]

log = logging.getLogger(__name__)

PlateId = tuple[str, int]


def pool_stats(
    means: np.ndarray, stds: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the union of groups, from each group's mean, std and size.

    Args:
        means: ``(G, C)`` per-group, per-channel means.
        stds: ``(G, C)`` per-group population stds.
        counts: ``(G,)`` pixels per group (the weights).

    Returns:
        ``(mean, std)``, each ``(C,)`` float64.
    """
    means, stds = np.asarray(means, np.float64), np.asarray(stds, np.float64)
    w = np.asarray(counts, np.float64)[:, None]
    total = w.sum()
    mean = (w * means).sum(0) / total
    second = (w * (stds**2 + means**2)).sum(0) / total
    return mean, np.sqrt(np.maximum(second - mean**2, 0.0))


class Normalizer:
    """Turns a uint8 ``(C, H, W)`` site into float32 ``(x - mean) / std`` per channel.

    Args:
        packed: The packed dataset whose plate statistics are used.
        mode: ``"plate"``, ``"experiment"``, ``"global"`` or ``"image"``.
        stats_from: ``"all"`` or ``"negative_control"`` pack statistics.
        channels: 0-based indices of the channels the images carry (a subset selects
            the matching statistics); None = all.
        min_std: Floor on the std divided by (grey levels).
        plates: Plates ``(experiment, plate)`` to prepare; default: every plate of the
            dataset. ``"global"`` pools exactly these plates.
    """

    def __init__(
        self,
        packed: PackedDataset,
        mode: str = "plate",
        stats_from: str = "all",
        channels: list[int] | None = None,
        min_std: float = 1.0,
        plates: Iterable[PlateId] | None = None,
    ):
        self.mode = mode
        self.min_std = float(min_std)
        n_channels = len(packed.info.channels)
        self.channels = list(range(n_channels)) if channels is None else list(channels)
        self._table: dict[PlateId, tuple[np.ndarray, np.ndarray]] = {}
        if mode == "image":
            return  # nothing to precompute: each image is its own reference
        if plates is None:
            plates = packed.metadata[["experiment", "plate"]].drop_duplicates().itertuples(False)
        plates = sorted({(str(e), int(p)) for e, p in plates})
        raw = {}
        for exp, plate in plates:
            info = packed.plate_info(exp, plate)
            mean, std = info.channel_stats(stats_from)
            raw[exp, plate] = (mean, std, info.stats[stats_from]["n_pixels"])
        groups: dict[object, list[PlateId]] = {}
        for key in plates:
            group = {"plate": key, "experiment": key[0], "global": None}[mode]
            groups.setdefault(group, []).append(key)
        for members in groups.values():
            mean, std = pool_stats(
                np.stack([raw[k][0] for k in members]),
                np.stack([raw[k][1] for k in members]),
                np.array([raw[k][2] for k in members]),
            )
            for key in members:
                self._table[key] = self._select(mean, std)
        log.debug("normalizer %s/%s over %d plates", mode, stats_from, len(plates))

    def _select(self, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = self.channels
        return (
            np.asarray(mean[idx], np.float32)[:, None, None],
            np.maximum(np.asarray(std[idx], np.float32), self.min_std)[:, None, None],
        )

    def stats(self, experiment: str, plate: int) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` of the selected channels for a plate, each ``(C,)`` float32.

        Args:
            experiment: e.g. ``"HEPG2-01"``.
            plate: 1-based plate number.
        """
        if self.mode == "image":
            raise ValueError("per-image normalization has no plate statistics")
        mean, std = self._table[str(experiment), int(plate)]
        return mean[:, 0, 0], std[:, 0, 0]

    def __call__(self, image: np.ndarray, experiment: str, plate: int) -> np.ndarray:
        """The normalized float32 image.

        Args:
            image: uint8 ``(C, H, W)`` with the selected channels only.
            experiment: The image's experiment.
            plate: The image's plate.
        """
        x = image.astype(np.float32)
        if self.mode == "image":
            mean = x.mean(axis=(1, 2), keepdims=True)
            std = np.maximum(x.std(axis=(1, 2), keepdims=True), self.min_std)
        else:
            mean, std = self._table[str(experiment), int(plate)]
        x -= mean  # in place: the loader's hot path, no temporaries
        x /= std
        return x
