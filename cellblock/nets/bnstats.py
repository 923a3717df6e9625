"""BatchNorm statistics of one plate: a trained network adapted to a batch (AdaBN).

A network trained with ``data.batch_by: plate`` saw every training batch from a single
plate, so each BatchNorm layer normalized its features within that plate: the plate's
offset in every layer was removed before the next one, the way ``data.normalization``
removes it from the pixels. Its stored running statistics are an average over plates.
At prediction the same per-plate view comes from statistics estimated on the plate
being predicted (Li et al. 2016, "Revisiting batch normalization for practical domain
adaptation"):

    trained net ──► reset BN running stats ──► forward every site of plate P (BN in
    training mode, dropout off, no gradients) ──► cumulative mean/var = P's statistics
    ──► predict P's wells in eval mode with them

The estimate is a function of the plate's sites alone (all of them, in a fixed order),
never of the wells a block asks for: blockwise workers that each adapt to the same plate
agree to the last bit on one device.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["bn_buffers", "estimate_bn_stats", "load_bn_buffers", "using_bn_buffers"]

log = logging.getLogger(__name__)

Buffers = dict[str, torch.Tensor]


def _bn_layers(net: nn.Module) -> dict[str, _BatchNorm]:
    return {name: m for name, m in net.named_modules() if isinstance(m, _BatchNorm)}


def bn_buffers(net: nn.Module) -> Buffers:
    """Copies of the running statistics of every BatchNorm layer of ``net``.

    Returns:
        ``{"<layer>.running_mean" | ".running_var" | ".num_batches_tracked": tensor}``;
        empty for a network without BatchNorm.
    """
    out: Buffers = {}
    for name, layer in _bn_layers(net).items():
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            value = getattr(layer, key)
            if value is not None:
                out[f"{name}.{key}"] = value.detach().clone()
    return out


def load_bn_buffers(net: nn.Module, buffers: Buffers) -> None:
    """Copy ``buffers`` (from ``bn_buffers`` of the same architecture) into ``net``.

    Raises:
        KeyError: ``buffers`` lacks a BatchNorm buffer of ``net``.
    """
    for name, layer in _bn_layers(net).items():
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            value = getattr(layer, key)
            if value is not None:
                value.copy_(buffers[f"{name}.{key}"])


@contextmanager
def using_bn_buffers(net: nn.Module, buffers: Buffers) -> Iterator[None]:
    """``net`` with ``buffers`` loaded inside the block, its own statistics after it."""
    own = bn_buffers(net)
    load_bn_buffers(net, buffers)
    try:
        yield
    finally:
        load_bn_buffers(net, own)


@torch.no_grad()
def estimate_bn_stats(net: nn.Module, inputs: Iterable[torch.Tensor]) -> Buffers:
    """BatchNorm statistics of ``inputs``: the cumulative mean of every batch's mean and
    variance, per layer (``momentum=None``), as the network sees them.

    ``net`` is left as it was: its statistics, momenta and training flags are restored.
    Only the BatchNorm layers run in training mode; dropout and the rest stay in eval.

    Args:
        net: The network.
        inputs: Batches the network takes, already normalized and on its device (more
            than one item each: a lone sample, which has no variance, is skipped).
            Wrap the call in ``torch.autocast`` to estimate as the network predicts.

    Returns:
        The estimated buffers (``bn_buffers`` layout); the trained ones if ``inputs``
        is empty.
    """
    layers = _bn_layers(net)
    own, modes = bn_buffers(net), {name: m.training for name, m in net.named_modules()}
    momenta = {name: layer.momentum for name, layer in layers.items()}
    net.eval()
    for layer in layers.values():
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches
        layer.train()
    seen = 0
    try:
        for batch in inputs:
            if len(batch) > 1:  # a lone sample has no variance (BatchNorm1d refuses it)
                net(batch)
                seen += 1
        estimated = bn_buffers(net) if seen else own
    finally:
        load_bn_buffers(net, own)
        for name, layer in layers.items():
            layer.momentum = momenta[name]
        for name, module in net.named_modules():
            module.train(modes[name])
    log.debug("BatchNorm statistics of %d layers from %d batches", len(layers), seen)
    return estimated
