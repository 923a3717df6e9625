"""Data-parallel training across processes (DDP): who am I, and talking to the others.

One process per GPU (or per CPU slot with the gloo backend), launched by ``torchrun``
or by submitit's tasks-per-node (``submitit.helpers.TorchDistributedEnvironment().export()``),
both of which set the environment read here::

    RANK  WORLD_SIZE  LOCAL_RANK  MASTER_ADDR  MASTER_PORT

Every rank runs the same loop on its share of each global batch; gradients are averaged
by ``DistributedDataParallel``; rank 0 alone writes checkpoints, logs and plots. Without
those variables (``WORLD_SIZE`` unset or 1) nothing here touches ``torch.distributed``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cellblock.errors import UserError

__all__ = ["DistEnv"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a data-parallel job.

    Args:
        rank: Global rank, 0..world_size-1.
        world_size: Number of processes.
        local_rank: Rank on this node (picks the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DistEnv:
        """Read ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (single process if absent)."""
        environ = os.environ if environ is None else environ
        try:
            world = int(environ.get("WORLD_SIZE", "1"))
            rank = int(environ.get("RANK", "0"))
            local = int(environ.get("LOCAL_RANK", str(rank)))
        except ValueError as err:
            raise UserError(f"distributed environment: {err}") from None
        if world < 1 or not 0 <= rank < world:
            raise UserError(f"distributed environment: RANK={rank} with WORLD_SIZE={world}")
        return cls(rank, world, local)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files."""
        return self.rank == 0

    def start(self, device: torch.device) -> torch.device:
        """Join the process group (nccl on CUDA, gloo on CPU); returns this rank's device."""
        if not self.enabled:
            return device
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, rank=self.rank, world_size=self.world_size)
            log.info("rank %d of %d joined (%s)", self.rank, self.world_size, backend)
        return device

    def stop(self) -> None:
        """Leave the process group (if this process joined one)."""
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (``[obj]`` when single-process)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any (e.g. a stop request)."""
        if not self.enabled:
            return flag
        on = torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else None
        value = torch.tensor([int(flag)], device=on)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        """Wait for all ranks."""
        if self.enabled:
            dist.barrier()
