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

``GroupedSampler`` (``data.batch_by``) orders each epoch in chunks of one group (a plate
or an experiment) so that every optimizer step sees one group only; a chunk holds
``batch_size * world_size`` positions, so each rank's micro-batch is from that group::

    epoch       | plate 3 chunk | plate 1 chunk | plate 3 chunk | plate 2 chunk | ...
    within      shuffled members; a group's last chunk is topped up with members drawn
                again, so every chunk is full and an epoch has a fixed length
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from cellblock.data.loader import even_spans

__all__ = ["GroupedSampler", "InfiniteSampler", "group_batches"]


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


class GroupedSampler(InfiniteSampler):
    """Dataset positions forever, in chunks of one group each, reshuffled each epoch.

    Args:
        groups: The group of every dataset position (e.g. ``"HEPG2-01/1"`` for a plate);
            any hashable values.
        chunk: Positions per chunk: ``batch_size * world_size``, so one optimizer step
            (all ranks' micro-batches) covers exactly one chunk.
        seed: Seed of the permutations.
        start: Global stream position to begin at, as for ``InfiniteSampler``; a
            multiple of ``chunk`` keeps steps aligned with chunks.
        rank: This process's rank.
        world_size: Number of data-parallel processes.
    """

    def __init__(
        self,
        groups: Sequence,
        chunk: int,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if chunk < 1:
            raise ValueError(f"GroupedSampler: chunk {chunk}")
        keys = list(dict.fromkeys(groups))  # first-seen order: a pure function of groups
        where = {key: i for i, key in enumerate(keys)}
        codes = np.array([where[g] for g in groups], dtype=np.int64)
        self.members = [np.flatnonzero(codes == i) for i in range(len(keys))]
        self.chunks = [-(-len(m) // chunk) for m in self.members]
        self.chunk = chunk
        super().__init__(sum(self.chunks) * chunk, seed, start, rank, world_size)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Epoch ``epoch``: whole chunks of single groups, groups and chunks shuffled."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        chunks: list[np.ndarray] = []
        for members, n_chunks in zip(self.members, self.chunks, strict=True):
            shuffled = members[torch.randperm(len(members), generator=g).numpy()]
            short = n_chunks * self.chunk - len(members)
            extra = members[torch.randint(len(members), (short,), generator=g).numpy()]
            filled = np.concatenate([shuffled, extra])
            chunks += np.split(filled, n_chunks)
        order = torch.randperm(len(chunks), generator=g).tolist()
        return torch.from_numpy(np.concatenate([chunks[i] for i in order]))


def group_batches(groups: Sequence, batch_size: int) -> list[list[int]]:
    """Evaluation batches that never mix groups: each group's positions, in order, cut
    into near-equal batches of at most ``batch_size`` (none a lone item unless the
    group is), groups in first-seen order.

    Args:
        groups: The group of every dataset position.
        batch_size: The largest batch.
    """
    members: dict = {}
    for position, group in enumerate(groups):
        members.setdefault(group, []).append(position)
    out: list[list[int]] = []
    for positions in members.values():  # the batching prediction's estimate uses too
        out += [positions[a:b] for a, b in even_spans(len(positions), batch_size)]
    return out
