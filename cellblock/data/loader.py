"""``make_loader``: the DataLoader settings every training and validation run shares;
``read_batches`` and ``SiteReads``: a dataset's sites in order, read ahead by threads
(prediction); ``even_spans``: the one rule for batches whose composition matters.

A batch is ``(images, labels, index)``: ``images`` a tensor (in shared memory when a
worker made it), ``labels`` and ``index`` small int64 numpy arrays. The small arrays
travel inside the worker's message; as tensors each would cost its own shared-memory
handshake with the worker (a socket connection and an authentication round trip,
~0.5 ms per tensor per batch on the 2-core CI machine) -- measured as a few percent of a
small model's training step (``scripts/bench/train.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

if TYPE_CHECKING:
    from cellblock.data.dataset import SiteDataset

__all__ = ["SiteBatch", "SiteReads", "collate_sites", "even_spans", "make_loader", "read_batches"]

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


def even_spans(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``[start, end)`` of ``n`` items cut into near-equal batches of at most ``batch_size``
    (``numpy.array_split``'s sizes: the first ones one larger), none empty.

    The one rule for batches whose composition matters, e.g. the BatchNorm statistics of
    a plate, estimated as validation and prediction both do.
    """
    if n == 0:
        return []
    sizes = [len(part) for part in np.array_split(np.arange(n), -(-n // batch_size))]
    ends = np.cumsum(sizes).tolist()
    return list(zip([0, *ends[:-1]], ends, strict=True))


class SiteReads:
    """A dataset's sites read in order, up to ``ahead`` of them in flight in ``pool``.

    Creating one starts its first reads, so the sites of the next block can load while
    the network runs the current one; reads are bounded, whatever the dataset's size.

    Args:
        dataset: The sites (``unit="site"``, ``normalize=False``).
        pool: Reader threads; None = read in the consuming thread.
        ahead: Sites read ahead (at least one).
    """

    def __init__(self, dataset: SiteDataset, pool: Executor | None, ahead: int):
        self.dataset, self.pool, self.ahead = dataset, pool, max(1, ahead)
        self._pending: deque[Future] = deque()
        self._next = 0
        self._fill()

    def __len__(self) -> int:
        return len(self.dataset)

    def _fill(self) -> None:
        if self.pool is None:
            return
        while self._next < len(self.dataset) and len(self._pending) < self.ahead:
            self._pending.append(self.pool.submit(self.dataset.read, self._next))
            self._next += 1

    def _take(self) -> np.ndarray:
        if self.pool is None:
            self._next += 1
            return self.dataset.read(self._next - 1)
        image = self._pending.popleft().result()
        self._fill()
        return image

    def batches(self, spans: Sequence[tuple[int, int]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """uint8 ``(B, C, H, W)`` batches of consecutive ``spans`` covering the dataset
        from its first site, with their row labels (``dataset.index``)."""
        for a, b in spans:
            yield np.stack([self._take() for _ in range(a, b)]), self.dataset.index[a:b]

    def cancel(self) -> None:
        """Drop the reads not yet started (a block given up)."""
        for future in self._pending:
            future.cancel()
        self._pending.clear()


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
        even: Batches of near-equal sizes (``even_spans``), so none is a lone site;
            else full batches and a remainder.
    """
    n = len(dataset)
    if even:
        spans = even_spans(n, batch_size)
    else:
        spans = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if readers == 0:
        yield from SiteReads(dataset, None, 0).batches(spans)
        return
    with ThreadPoolExecutor(readers, thread_name_prefix="read") as pool:
        reads = SiteReads(dataset, pool, 2 * batch_size)
        try:
            yield from reads.batches(spans)
        finally:
            reads.cancel()
