"""``InfiniteSampler``: an endless, seeded stream of dataset positions that can start anywhere.

Epoch ``e`` is a permutation seeded by ``(seed, e)``; position ``p`` of the stream is
entry ``p % n`` of epoch ``p // n``. The stream is a pure function of ``(seed, start)``,
so a resumed run derives its data order from the iteration number alone, never from
loader state, and sees exactly the batches the uninterrupted run saw.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["InfiniteSampler"]


class InfiniteSampler(Sampler[int]):
    """Dataset positions forever, reshuffled each epoch.

    Args:
        n: Dataset length (> 0).
        seed: Seed of the permutations.
        start: Stream position to begin at (e.g. ``iteration * items_per_iteration``).
    """

    def __init__(self, n: int, seed: int, start: int = 0):
        if n <= 0:
            raise ValueError("InfiniteSampler: empty dataset")
        self.n, self.seed, self.start = n, seed, start

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The permutation of epoch ``epoch``."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.n)
        while True:
            order = self.epoch_order(epoch).tolist()
            yield from order[offset:]
            epoch, offset = epoch + 1, 0
