"""``InfiniteSampler``: an endless, seeded stream of dataset positions that can start anywhere.

Epoch ``e`` is a permutation seeded by ``(seed, e)``; position ``p`` of the stream is
entry ``p % n`` of epoch ``p // n``. The stream is a pure function of ``(seed, start)``,
so a resumed run derives its data order from the iteration number alone, never from
loader state, and sees exactly the batches the uninterrupted run saw.

With ``world_size`` data-parallel processes, rank ``r`` takes every ``world_size``-th
position of the one global stream, starting at ``start + r``: a micro-batch step of all
ranks together covers ``batch_size * world_size`` consecutive positions::

    global stream   p0 p1 p2 p3 p4 p5 p6 p7 ...
    rank 0          p0    p2    p4    p6
    rank 1             p1    p3    p5    p7
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["InfiniteSampler"]


class InfiniteSampler(Sampler[int]):
    """Dataset positions forever, reshuffled each epoch.

    Args:
        n: Dataset length (> 0).
        seed: Seed of the permutations.
        start: Global stream position to begin at (``iteration * items_per_iteration``,
            counting the items of all ranks).
        rank: This process's rank.
        world_size: Number of data-parallel processes.
    """

    def __init__(self, n: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1):
        if n <= 0:
            raise ValueError("InfiniteSampler: empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"InfiniteSampler: rank {rank} with world_size {world_size}")
        self.n, self.seed, self.start = n, seed, start
        self.rank, self.world_size = rank, world_size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The permutation of epoch ``epoch``."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def _stream(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.n)
        while True:
            order = self.epoch_order(epoch).tolist()
            yield from order[offset:]
            epoch, offset = epoch + 1, 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(self._stream(), self.rank, None, self.world_size)
