"""The state a training run carries: what one iteration hands to the next.

:class:`TrainState` holds the network (and the module that runs it: DDP,
``torch.compile``), optimizer, scheduler, batch augmentation and normalization, and the
:class:`LogWindow` of the ``log.csv`` row being accumulated; :class:`Step` is what one
optimizer step leaves for logging and snapshots; :class:`RunContext` is what stays
fixed while ``loop.train`` iterates. ``cellblock.training.steps`` makes and steps them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cellblock.data.augment import BatchAugment
from cellblock.data.normalize import BatchNormalizer
from cellblock.nets.models import Net
from cellblock.training.distributed import DistEnv
from cellblock.training.inputs import RunData
from cellblock.training.logs import RunLog
from cellblock.training.setupconfig import SetupConfig

__all__ = ["LogWindow", "RunContext", "Step", "TrainState"]


@dataclass
class LogWindow:
    """The ``log.csv`` row being accumulated, and the throughput clock.

    The row travels in checkpoints (``log_window``): a run stopped between rows resumes
    the same average.

    Attributes:
        loss: Sum of the step losses since the last row.
        steps: Steps summed in ``loss``.
        tick: ``time.perf_counter()`` when throughput timing (re)started.
        timed: Steps since ``tick``.
    """

    loss: float = 0.0
    steps: int = 0
    tick: float = 0.0
    timed: int = 0

    @classmethod
    def resume(cls, state: dict[str, Any] | None) -> LogWindow:
        """The window a checkpoint's state saved (empty for a new run or an older file).

        Args:
            state: The checkpoint's state, or None for a new run.
        """
        window = state.get("log_window", {"loss": 0.0, "steps": 0}) if state else {}
        return cls(loss=float(window.get("loss", 0.0)), steps=int(window.get("steps", 0)))

    def add(self, step_loss: float) -> None:
        """Count one optimizer step of loss ``step_loss``."""
        self.loss, self.steps, self.timed = self.loss + step_loss, self.steps + 1, self.timed + 1

    def restart_clock(self) -> None:
        """Start timing throughput afresh (after validation or a checkpoint)."""
        self.tick, self.timed = time.perf_counter(), 0

    def take_row(self, *, done: int, lr: float, per_step: int, items: int) -> dict[str, Any]:
        """The ``log.csv`` row of iteration ``done``; the window starts afresh.

        Args:
            done: The iteration just finished.
            lr: Its learning rate.
            per_step: Items per optimizer step over all ranks.
            items: Items in the training dataset (for the epoch).
        """
        seconds = max(time.perf_counter() - self.tick, 1e-9)
        row = {
            "iteration": done,
            "loss": self.loss / self.steps,  # rank 0's share of the global batch
            "lr": lr,
            "img_per_s": round(self.timed * per_step / seconds, 1),
            "epoch": round(done * per_step / items, 3),
        }
        self.loss, self.steps = 0.0, 0
        self.restart_clock()
        return row

    def saved(self) -> dict[str, Any]:
        """What a checkpoint keeps of it (``log_window``)."""
        return {"loss": self.loss, "steps": self.steps}


@dataclass
class TrainState:
    """Everything one iteration hands to the next.

    Attributes:
        net: The network.
        model: What runs it: ``net``, or ``net`` wrapped in DDP and/or ``torch.compile``.
        optimizer: Its optimizer.
        scheduler: Its learning-rate schedule.
        augment: The batch augmentation (on the device; its generator is checkpointed).
        normalize: Turns uint8 batches into the network's inputs (on the device).
        device: Where training runs.
        dtype: The autocast dtype (``cellblock.precision``); None: fp32, no autocast.
        channels_last: Channels-last memory format (CUDA only).
        scaler: The fp16 gradient scaler (checkpointed); None in bf16 and fp32.
        window: The ``log.csv`` row being accumulated.
    """

    net: Net
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    augment: BatchAugment
    normalize: BatchNormalizer
    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool
    scaler: torch.amp.GradScaler | None = None  # fp16: scales the loss, skips inf steps
    window: LogWindow = field(default_factory=LogWindow)


@dataclass
class Step:
    """What one optimizer step leaves for logging and snapshots.

    Attributes:
        loss: The step's loss (its micro-batches' losses summed).
        lr: The learning rate it ran with.
        batch: Its last micro-batch: (images as the network saw them, labels, the
            loader's row indices).
        logits: The network's logits on that micro-batch.
    """

    loss: float
    lr: float
    batch: tuple[torch.Tensor, torch.Tensor, np.ndarray]
    logits: torch.Tensor


@dataclass
class RunContext:
    """What stays fixed while ``train`` iterates: where it writes and what it reads.

    Attributes:
        run_dir: The run folder.
        cfg: The setup.
        resolved: Its resolved config (a plain dict, as checkpoints store it).
        env: The data-parallel environment.
        data: The run's datasets, normalization and tables.
        classes: The sirna id of every class (for snapshots).
        log: Where metrics go (rank 0), else None.
        val_batches: The validation loader, or None when nothing is held out.
        iterations: The iteration to reach.
        per_step: Items per optimizer step over all ranks.
    """

    run_dir: Path
    cfg: SetupConfig
    resolved: dict[str, Any]
    env: DistEnv
    data: RunData
    classes: tuple[int, ...]
    log: RunLog | None
    val_batches: DataLoader | None
    iterations: int
    per_step: int
