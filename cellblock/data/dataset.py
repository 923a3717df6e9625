"""``SiteDataset``: a torch Dataset of normalized sites (or wells) of a packed dataset.

Reads through ``PackedDataset.read_site`` only (one chunk per site, never PNGs).
Safe in DataLoader workers: the packed dataset is opened lazily once per process
(fork or spawn alike), so no file handles or shard-index caches cross processes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from cellblock.data.config import DataConfig
from cellblock.data.labels import make_labels, read_pseudo_labels
from cellblock.data.normalize import BatchNormalizer, Normalizer
from cellblock.errors import UserError
from cellblock.store.packed import PackedDataset

__all__ = ["SiteDataset", "dataset_labels"]

log = logging.getLogger(__name__)

Item = tuple[torch.Tensor, int, int]


def dataset_labels(packed: PackedDataset, config: DataConfig) -> pd.Series:
    """Labels of every site-table row for ``config`` (pseudo labels read and merged).

    Args:
        packed: The packed dataset.
        config: Its ``label``, ``use_test_labels``, ``pseudo_labels``, ``min_confidence``.
    """
    table = packed.metadata
    pseudo = None
    if config.pseudo_labels is not None:
        pseudo = read_pseudo_labels(config.pseudo_labels, table)
    return make_labels(table, config.label, config.use_test_labels, pseudo, config.min_confidence)


class SiteDataset(Dataset):
    """Items ``(image, label, index)``: the image, its class (-1 unknown), its row.

    The image is float32 and normalized, or with ``normalize=False`` the uint8 pixels,
    left for ``batch_normalizer()`` to normalize on the device, batched.

    ``image`` is ``(C, H, W)`` for ``unit="site"`` and ``(S, C, H, W)`` for
    ``unit="well"`` (its sites in site order); ``C`` counts the selected channels.
    ``index`` is the site-table index label of the site (of the well's first site).

    Args:
        packed: The packed dataset, or its folder.
        rows: Site-table index labels to serve (e.g. from ``select_rows``); None = all.
        config: Unit, channels, normalization, labels.
        labels: Class per site-table row (``dataset_labels``); None = computed here.
        normalizer: A prepared ``Normalizer``; None = built from ``config``.
        normalize: Normalize each image here; False = serve uint8 pixels.
    """

    def __init__(
        self,
        packed: PackedDataset | Path | str,
        rows: Sequence | pd.Index | None,
        config: DataConfig,
        labels: pd.Series | None = None,
        *,
        normalizer: Normalizer | None = None,
        normalize: bool = True,
    ):
        if not isinstance(packed, PackedDataset):
            packed = PackedDataset(packed)
        self.path = packed.path
        self._packed: PackedDataset | None = packed
        self._pid = os.getpid()
        self.config = config
        self.normalize = normalize
        self.channels = config.channel_index(len(packed.info.channels))
        table = packed.metadata
        table = table if rows is None else table.loc[pd.Index(rows)]
        if labels is None:
            labels = dataset_labels(packed, config)
        self.normalizer = normalizer or Normalizer(
            packed,
            config.normalization,
            config.stats_from,
            channels=self.channels,
            min_std=config.min_std,
        )
        table = table.assign(_label=labels.reindex(table.index).fillna(-1).astype(np.int64))
        self._build_items(table)
        log.debug("SiteDataset: %d %ss from %s", len(self), config.unit, self.path)

    def _build_items(self, table: pd.DataFrame) -> None:
        # plain arrays, not a DataFrame: cheap to pickle and to index per item
        if self.config.unit == "site":
            groups = [np.array([i]) for i in range(len(table))]
        else:
            keys = ["experiment", "plate", "row", "col"]
            ordered = table.reset_index(drop=True).sort_values([*keys, "site"], kind="stable")
            groups = [g.index.to_numpy() for _, g in ordered.groupby(keys, sort=False)]
            sizes = {len(g) for g in groups}
            if len(sizes) > 1:
                raise UserError(
                    f"unit=well: wells have different numbers of selected sites {sorted(sizes)}"
                )
        first = np.array([g[0] for g in groups], dtype=np.int64)
        self.sites = np.stack(groups) if groups else np.zeros((0, 1), np.int64)
        self.experiment = table["experiment"].to_numpy(dtype=object)
        self.plate = table["plate"].to_numpy(np.int64)
        self.row = table["row"].to_numpy(np.int64)
        self.col = table["col"].to_numpy(np.int64)
        self.site = table["site"].to_numpy(np.int64)
        self.index = table.index.to_numpy(np.int64)[first]
        self.site_index = table.index.to_numpy(np.int64)[self.sites]  # (items, sites)
        self.labels = table["_label"].to_numpy(np.int64)[first]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_packed"] = None  # each process opens its own reader
        return state

    @property
    def packed(self) -> PackedDataset:
        """This process's ``PackedDataset`` (opened on first use in a new process)."""
        if self._packed is None or self._pid != os.getpid():
            self._packed = PackedDataset(self.path)
            self._pid = os.getpid()
        return self._packed

    def __len__(self) -> int:
        return len(self.sites)

    def item_sites(self, index: np.ndarray) -> np.ndarray:
        """Site-table index labels of the sites of items, in the order they are stacked.

        Args:
            index: Items' ``index`` (the batch's third element).

        Returns:
            ``(len(index), S)``, ``S`` = 1 for ``unit="site"``.
        """
        position = pd.Series(np.arange(len(self.index)), index=self.index)
        return self.site_index[position.loc[np.asarray(index)].to_numpy()]

    def item_groups(self, by: str) -> list[str]:
        """The group of every item: its ``"experiment"`` or ``"plate"`` (``"HEPG2-01/1"``).

        Args:
            by: ``"experiment"`` or ``"plate"`` (``data.batch_by``).
        """
        first = self.sites[:, 0]
        experiments = self.experiment[first].astype(str)
        if by == "experiment":
            return experiments.tolist()
        return [f"{e}/{p}" for e, p in zip(experiments, self.plate[first].tolist(), strict=True)]

    def batch_normalizer(self) -> BatchNormalizer:
        """The normalization of this dataset as a module for its uint8 batches."""
        return self.normalizer.batch_normalizer(self.packed.metadata)

    def read(self, position: int) -> np.ndarray:
        """The site at ``position`` of the served rows: normalized float32, or uint8.

        Args:
            position: 0-based position among the served site rows.
        """
        exp, plate = self.experiment[position], int(self.plate[position])
        image = self.packed.read_site(
            exp, plate, int(self.row[position]), int(self.col[position]), int(self.site[position])
        )
        image = image[self.channels]
        return self.normalizer(image, exp, plate) if self.normalize else image

    def __getitem__(self, i: int) -> Item:
        images = [self.read(p) for p in self.sites[i]]
        image = images[0] if self.config.unit == "site" else np.stack(images)
        return torch.from_numpy(image), int(self.labels[i]), int(self.index[i])
