"""Per-channel normalization of uint8 sites from the pack's plate statistics.

``pack`` stores per plate and channel the mean and (population) std over all imaged
wells and over negative-control wells, with the pixel count. Experiment and global
statistics pool those exactly: with ``n_i`` pixels, mean ``m_i`` and std ``s_i`` per
plate, ``m = sum(n_i m_i) / N`` and ``var = sum(n_i (s_i^2 + m_i^2)) / N - m^2`` —
the statistics of all pooled pixels, which averaging the stds would not give.

Two places apply the same arithmetic: ``Normalizer`` on one uint8 site in numpy (a
loader worker, a reader thread), ``BatchNormalizer`` on a uint8 batch on its device.
Training and prediction ship uint8 to the device and normalize there: a quarter of the
bytes through shared memory, pinned memory and PCIe, and no float work on the CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn

from cellblock.store.packed import PackedDataset

__all__ = ["BatchNormalizer", "Normalizer", "pool_stats"]

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
        *,
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

    def batch_normalizer(self, table: pd.DataFrame) -> BatchNormalizer:
        """This normalization as a module for uint8 batches of ``table``'s rows.

        Args:
            table: The site table (``PackedDataset.metadata``) whose index labels the
                batches carry; every plate in it must be one this normalizer prepared.
        """
        if self.mode == "image":
            return BatchNormalizer(None, None, None, self.min_std)
        keys = sorted(self._table)
        slot = {key: i for i, key in enumerate(keys)}
        pairs = set(zip(table["experiment"].astype(str), table["plate"].astype(int), strict=True))
        if missing := sorted(pairs - set(slot)):
            raise ValueError(f"no statistics prepared for plates {missing}")
        plate_of = np.zeros(int(table.index.max()) + 1 if len(table) else 0, np.int64)
        rows = zip(table["experiment"].astype(str), table["plate"].astype(int), strict=True)
        plate_of[table.index.to_numpy()] = [slot[key] for key in rows]
        mean = np.stack([self._table[k][0][:, 0, 0] for k in keys])
        std = np.stack([self._table[k][1][:, 0, 0] for k in keys])
        return BatchNormalizer(plate_of, mean, std, self.min_std)


class BatchNormalizer(nn.Module):
    """``Normalizer`` for uint8 batches on their device, plates looked up by row.

    Made by ``Normalizer.batch_normalizer``. Its tables are buffers (``.to(device)``
    moves them) but not state: they are rebuilt from the dataset, never checkpointed.

    Args:
        plate_of: ``(rows,)`` plate slot per site-table index label; None = per-image.
        mean: ``(plates, C)`` channel means per slot.
        std: ``(plates, C)`` channel stds per slot (floored already).
        min_std: Floor on the per-image std.
    """

    plate_of: torch.Tensor  # the buffers (when not per_image)
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, plate_of, mean, std, min_std: float):
        super().__init__()
        self.per_image, self.min_std = plate_of is None, float(min_std)
        if not self.per_image:
            self.register_buffer("plate_of", torch.as_tensor(plate_of), persistent=False)
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32), False)
            self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32), False)

    def forward(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Float32 ``(x - mean) / std`` per channel.

        Args:
            images: uint8 ``(B, C, H, W)`` sites or ``(B, S, C, H, W)`` wells.
            index: ``(B,)`` site-table index label of each item (a well's first site).
        """
        x = images.float()
        if self.per_image:
            mean = x.mean((-2, -1), keepdim=True)
            std = x.std((-2, -1), correction=0, keepdim=True).clamp_min(self.min_std)
        else:
            # a pageable copy is staged at once, so non_blocking is safe; no checks here,
            # since checking a device tensor would wait for the device
            slot = self.plate_of[index.to(self.plate_of.device, non_blocking=True)]
            shape = (len(x),) + (1,) * (x.ndim - 4) + (x.shape[-3], 1, 1)
            mean, std = self.mean[slot].view(shape), self.std[slot].view(shape)
        return (x - mean) / std
