"""``make_loader``: the DataLoader settings every training and prediction run shares."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["make_loader"]


def make_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    workers: int = 0,
    seed: int = 0,
    device: torch.device | str | None = None,
    prefetch_factor: int = 4,
) -> DataLoader:
    """A DataLoader: shuffled with a seeded generator and dropping the last partial batch
    when training; in order and complete otherwise.

    Args:
        dataset: Usually a ``SiteDataset``.
        batch_size: Items per batch.
        train: Shuffle and drop the last incomplete batch (constant batch shapes for
            BatchNorm and torch.compile).
        workers: Loader processes; 0 = load in this process. Workers persist across
            epochs, since opening readers and forking costs more than an epoch of a
            small dataset.
        seed: Seed of the shuffle order (the same seed gives the same batches).
        device: Where batches go; pinned host memory only helps copies to CUDA.
            None = CUDA if available.
        prefetch_factor: Batches each worker loads ahead (workers > 0 only).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    extra = {"prefetch_factor": prefetch_factor} if workers > 0 else {}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.device(device).type == "cuda",
        generator=torch.Generator().manual_seed(seed),
        **extra,
    )
