"""``make_loader``: the DataLoader settings every training and validation run shares;
``read_batches``: a dataset's sites in order, read ahead by threads (prediction).

A batch is ``(images, labels, index)``: ``images`` a tensor (in shared memory when a
worker made it), ``labels`` and ``index`` small int64 numpy arrays. The small arrays
travel inside the worker's message; as tensors each would cost its own shared-memory
handshake with the worker (a socket connection and an authentication round trip,
~0.5 ms per tensor per batch on the 2-core CI machine) -- measured as a few percent of a
small model's training step (``scripts/bench/train.py``).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

if TYPE_CHECKING:
    from cellblock.data.dataset import SiteDataset

__all__ = ["SiteBatch", "collate_sites", "make_loader", "read_batches"]

SiteBatch = tuple[torch.Tensor, np.ndarray, np.ndarray]


def collate_sites(items: Sequence[tuple[torch.Tensor, int, int]]) -> SiteBatch:
    """Stack ``(image, label, index)`` items into one batch.

    Args:
        items: Items of a ``SiteDataset``.
    """
    # default_collate stacks straight into shared memory in a worker (no extra copy)
    images = default_collate([item[0] for item in items])
    labels = np.fromiter((item[1] for item in items), np.int64, len(items))
    index = np.fromiter((item[2] for item in items), np.int64, len(items))
    return images, labels, index


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    workers: int = 0,
    seed: int = 0,
    device: torch.device | str | None = None,
    prefetch_factor: int = 4,
    sampler: Sampler | None = None,
    batches: Sequence[Sequence[int]] | None = None,
) -> DataLoader:
    """A DataLoader of ``SiteBatch`` batches: shuffled with a seeded generator and
    dropping the last partial batch when training; in order and complete otherwise.

    Args:
        dataset: Usually a ``SiteDataset``.
        batch_size: Items per batch.
        train: Shuffle and drop the last incomplete batch (constant batch shapes for
            BatchNorm and torch.compile).
        workers: Loader processes; 0 = load in this process. Workers persist across
            epochs, since opening readers and forking costs more than an epoch of a
            small dataset.
        seed: Seed of the shuffle order and of the workers' seeds (the same seed gives
            the same batches); creating the loader never draws from the global RNG.
        device: Where batches go; pinned host memory only helps copies to CUDA.
            None = CUDA if available.
        prefetch_factor: Batches each worker loads ahead (workers > 0 only).
        sampler: The item order (e.g. an endless ``InfiniteSampler``); replaces the
            shuffle. None = shuffled when training, in order otherwise.
        batches: Fixed batches of dataset positions, in order (evaluation only; replaces
            ``batch_size`` and the sampler), e.g. batches that never mix plates.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    extra: dict[str, Any] = {"prefetch_factor": prefetch_factor} if workers > 0 else {}
    if batches is not None:
        if train or sampler is not None:
            raise ValueError("make_loader: fixed batches are for evaluation, without a sampler")
        extra["batch_sampler"] = batches
    else:
        extra |= {"batch_size": batch_size, "shuffle": train and sampler is None,
                  "sampler": sampler, "drop_last": train}  # fmt: skip
    return DataLoader(
        dataset,
        num_workers=workers,
        collate_fn=collate_sites,
        persistent_workers=workers > 0,
        pin_memory=torch.device(device).type == "cuda",
        generator=torch.Generator().manual_seed(seed),
        **extra,
    )


def read_batches(
    dataset: SiteDataset, batch_size: int, *, readers: int = 0, even: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """uint8 ``(B, C, H, W)`` batches of ``dataset``'s sites in order, with their row
    labels (``dataset.index``), for prediction.

    Args:
        dataset: The sites (``unit="site"``, ``normalize=False``).
        batch_size: Sites per batch.
        readers: Threads reading ahead (two batches in flight, so the next one loads
            while the network runs this one); 0 = read in this thread.
        even: Batches of near-equal sizes (at most ``batch_size``), so none is a lone
            site; else full batches and a remainder.
    """
    n = len(dataset)
    if even:
        bounds = np.linspace(0, n, -(-n // batch_size) + 1).round().astype(int).tolist()
        spans = list(itertools.pairwise(bounds))
    else:
        spans = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if readers == 0:
        for a, b in spans:
            yield np.stack([dataset.read(i) for i in range(a, b)]), dataset.index[a:b]
        return
    with ThreadPoolExecutor(readers, thread_name_prefix="read") as pool:
        pending: deque = deque()

        def submit(a: int, b: int) -> None:
            pending.append((a, b, [pool.submit(dataset.read, i) for i in range(a, b)]))

        ahead = iter(spans)
        for span in itertools.islice(ahead, 2):
            submit(*span)
        while pending:
            a, b, futures = pending.popleft()
            if (following := next(ahead, None)) is not None:
                submit(*following)
            yield np.stack([f.result() for f in futures]), dataset.index[a:b]
