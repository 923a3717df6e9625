"""The data side of a run: rows, datasets and loaders of a resolved config.

The training loader iterates an :class:`InfiniteSampler` started at the stream position
of the first iteration to run, so its batches depend on the iteration number only.
Both loaders own their generators: creating them never draws from the global RNG.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from cellblock.data.dataset import SiteDataset, dataset_labels
from cellblock.data.loader import make_loader
from cellblock.data.normalize import BatchNormalizer
from cellblock.data.splits import select_rows
from cellblock.errors import UserError
from cellblock.store.packed import PackedDataset
from cellblock.training.sampler import GroupedSampler, InfiniteSampler, group_batches
from cellblock.training.setupconfig import SetupConfig

__all__ = ["RunData", "load_run_data", "train_loader", "val_loader"]

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """Training and validation datasets (uint8 items), their normalization (for batches on
    the device), the cell and well type of every validation row, the site table, and
    with ``data.batch_by`` the plate (experiment) of every validation row."""

    train: SiteDataset
    val: SiteDataset | None
    normalize: BatchNormalizer
    cell_types: dict[int, str]
    well_types: dict[int, str]
    table: pd.DataFrame  # the dataset's full site table (id_code, site, ... by index label)
    bn_groups: dict[int, str] | None = None  # validation row -> its BatchNorm group


def load_run_data(cfg: SetupConfig, dataset_path: Path | str) -> RunData:
    """Datasets for ``cfg`` over the packed dataset, checked against the network.

    Args:
        cfg: The setup (its ``data`` section selects; its ``net`` must fit the data).
        dataset_path: The packed dataset folder.

    Raises:
        UserError: No training rows, labels beyond ``net.num_classes``, or a channel
            count other than ``net.in_channels``.
    """
    packed = PackedDataset(dataset_path)
    table = packed.metadata
    labels = dataset_labels(packed, cfg.data)
    train_rows, val_rows = select_rows(table, cfg.data, labels)
    if len(train_rows) == 0:
        raise UserError(f"{dataset_path}: no labelled training rows for this data config")
    top = int(labels.loc[train_rows.union(val_rows)].max())
    if top >= cfg.net.num_classes:
        raise UserError(
            f"{dataset_path}: labels go up to {top} but net.num_classes is "
            f"{cfg.net.num_classes}; set net.num_classes={top + 1}"
        )
    channels = len(cfg.data.channel_index(len(packed.info.channels)))
    if channels != cfg.net.in_channels:
        raise UserError(
            f"{dataset_path}: the data config selects {channels} channels but "
            f"net.in_channels is {cfg.net.in_channels}"
        )
    # uint8 through the loader; normalized on the device (cellblock.data.normalize)
    train = SiteDataset(packed, train_rows, cfg.data, labels, normalize=False)
    val = None
    if len(val_rows):
        val = SiteDataset(
            packed, val_rows, cfg.data, labels, normalizer=train.normalizer, normalize=False
        )
    cell_types: dict[int, str] = {}
    well_types: dict[int, str] = {}
    if val is not None:
        rows = table.loc[pd.Index(val.index)]
        cell_types = dict(zip(val.index.tolist(), rows.cell_type.astype(str), strict=True))
        well_types = dict(zip(val.index.tolist(), rows.well_type.astype(str), strict=True))
    bn_groups = None
    if val is not None and cfg.data.batch_by is not None:
        keys = val.item_groups(cfg.data.batch_by)
        bn_groups = dict(zip(val.index.tolist(), keys, strict=True))
    return RunData(train, val, train.batch_normalizer(), cell_types, well_types, table, bn_groups)


def train_loader(
    dataset: SiteDataset,
    *,
    batch_size: int,
    seed: int,
    start: int,
    workers: int,
    device: torch.device,
    batch_by: str | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """Endless batches from stream position ``start`` (= first iteration x items per step).

    Args:
        dataset: The training dataset.
        batch_size: Items per micro-batch.
        seed: Seed of the data order.
        start: Stream position of the first item.
        workers: Loader processes.
        device: Where batches go (pinned memory for CUDA).
        batch_by: ``"plate"`` or ``"experiment"``: each micro-batch (of all ranks
            together) from one such group (``GroupedSampler``); None: mixed.
        rank: This process's rank (data parallel: each rank takes its share).
        world_size: Number of data-parallel processes.
    """
    sampler: InfiniteSampler
    if batch_by is None:
        sampler = InfiniteSampler(len(dataset), seed, start, rank, world_size)
    else:
        groups = dataset.item_groups(batch_by)
        sampler = GroupedSampler(groups, batch_size * world_size, seed, start, rank, world_size)
        log.info("training batches by %s: %d groups, %d chunks of %d per epoch", batch_by,
                 len(sampler.members), sum(sampler.chunks), sampler.chunk)  # fmt: skip
    return make_loader(
        dataset, batch_size, train=True, workers=workers, seed=seed, device=device, sampler=sampler
    )


def val_loader(
    dataset: SiteDataset,
    *,
    batch_size: int,
    workers: int,
    device: torch.device,
    batch_by: str | None = None,
) -> DataLoader:
    """All validation items, in order; with ``batch_by``, grouped so that no batch
    mixes plates (experiments): ``validate`` adapts BatchNorm to each group."""
    if batch_by is None:
        return make_loader(dataset, batch_size, train=False, workers=workers, device=device)
    batches = group_batches(dataset.item_groups(batch_by), batch_size)
    return make_loader(
        dataset, batch_size, train=False, workers=workers, device=device, batches=batches
    )
