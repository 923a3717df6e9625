"""Optimizer and learning-rate schedule of a ``TrainConfig``.

The schedule is a pure function of the iteration (``lr_factor``), wrapped in a
``LambdaLR`` whose state travels with the checkpoint.

- ``cosine``: linear warmup from 0 to the peak over ``warmup_iters``, then cosine
  decay to ``final_lr_fraction`` of the peak at ``schedule_iters``.
- ``onecycle``: linear rise from peak/25 over ``warmup_iters``, then cosine decay to
  ``final_lr_fraction`` of the peak (the one-cycle policy, momentum not cycled).
- ``constant``: linear warmup, then the peak.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from cellblock.training.config import TrainConfig

__all__ = ["lr_factor", "make_optimizer", "make_scheduler"]

ONECYCLE_START = 1 / 25  # torch's OneCycleLR div_factor


def lr_factor(iteration: int, cfg: TrainConfig) -> float:
    """Learning rate at ``iteration`` (0-based) as a fraction of the peak.

    Args:
        iteration: Optimizer steps taken so far.
        cfg: Schedule, warmup, horizon and final fraction.
    """
    warm, total, final = cfg.warmup_iters, cfg.schedule_iters, cfg.final_lr_fraction
    if iteration < warm:
        start = ONECYCLE_START if cfg.schedule == "onecycle" else 0.0
        return start + (1 - start) * (iteration + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (iteration - warm) / max(1, total - warm))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(
    params: Iterable[nn.Parameter], cfg: TrainConfig, world_size: int = 1
) -> torch.optim.Optimizer:
    """AdamW or Nesterov SGD at the peak learning rate.

    Args:
        params: The parameters to optimize.
        cfg: ``optimizer``, ``lr`` (scaled by ``peak_lr``), ``weight_decay``, ``momentum``.
        world_size: Data-parallel processes (the global batch scales the lr if asked).
    """
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.peak_lr(world_size),
            momentum=cfg.momentum,
            nesterov=True,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.AdamW(params, lr=cfg.peak_lr(world_size), weight_decay=cfg.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_factor` (stepped once per optimizer step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))
