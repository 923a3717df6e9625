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

The estimate is a function of the plate's sites alone (all of them, in a fixed order, in
batches fixed by the run's own config, never by the prediction's ``--batch-size``),
never of the wells a block asks for. A prediction estimates each plate once, whatever
the number of workers, and keeps it (``SharedStatistics``)::

    PRED/bnstats/HEPG2-03/Plate1.pt     {"buffers", "source", "sites", "seconds", ...}
    PRED/bnstats/HEPG2-03/Plate1.lock   held by the one worker estimating it

The first worker to reach a plate takes its lock, estimates, writes the file
(atomically) and releases; a worker reaching the plate meanwhile waits on the lock and
reads the file. A file made for another checkpoint, TTA, batching or dataset (its
``source`` differs) is estimated again; a damaged one too.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cellblock.atomic import atomic_path
from cellblock.locks import hold

__all__ = [
    "SharedStatistics",
    "bn_buffers",
    "estimate_bn_stats",
    "load_bn_buffers",
    "using_bn_buffers",
]

log = logging.getLogger(__name__)
# how long a worker waits for another one estimating the same plate: an estimate is one
# pass over a plate (seconds on a GPU, minutes on a CPU); past this, something is stuck
_WAIT_S = 6 * 3600.0

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


class SharedStatistics:
    """BatchNorm statistics of one prediction's groups (plates or experiments), each
    estimated once and shared by every process predicting into the same folder.

    Args:
        folder: ``PRED/bnstats``; None = kept in this process only.
        source: What the statistics depend on (checkpoint and its digest, TTA, estimate
            batching, dataset): a stored file with another ``source`` is estimated again.
    """

    def __init__(self, folder: Path | str | None, source: dict[str, Any]):
        self.folder = None if folder is None else Path(folder)
        self.source = dict(source)
        self._memory: dict[str, Buffers] = {}

    def get(self, name: str, estimate: Callable[[], tuple[Buffers, int]]) -> Buffers:
        """The statistics of group ``name`` (``"EXP/PlateN"`` or ``"EXP"``).

        Args:
            name: The group.
            estimate: Computes ``(buffers, sites)`` when no valid stored copy exists.
        """
        if name in self._memory:
            return self._memory[name]
        if self.folder is None:
            self._memory[name] = self._estimate(name, estimate)[0]
            return self._memory[name]
        path = self.folder / f"{name}.pt"
        buffers = self._read(path)
        if buffers is None:
            lock = path.with_suffix(".lock")
            with hold(lock, what=f"BatchNorm statistics {path}", wait_s=_WAIT_S):
                buffers = self._read(path)  # another worker may have made it meanwhile
                if buffers is None:
                    buffers, record = self._estimate(name, estimate)
                    data = io.BytesIO()
                    torch.save({**record, "buffers": buffers}, data)
                    with atomic_path(path) as tmp:
                        tmp.write_bytes(data.getbuffer())
        self._memory[name] = buffers
        return buffers

    def _estimate(
        self, name: str, estimate: Callable[[], tuple[Buffers, int]]
    ) -> tuple[Buffers, dict[str, Any]]:
        start, cpu = time.perf_counter(), time.process_time()
        buffers, sites = estimate()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        log.info(
            "BatchNorm statistics of %s: estimated from %d sites in %.2f s", name, sites, seconds
        )
        buffers = {k: v.detach().cpu() for k, v in buffers.items()}
        record = {
            "source": self.source,
            "sites": sites,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": time.time(),
        }
        return buffers, record

    def _read(self, path: Path) -> Buffers | None:
        """The stored buffers if ``path`` holds statistics of this ``source``, else None."""
        try:
            data = io.BytesIO(path.read_bytes())
            stored = torch.load(data, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None
        except Exception as err:  # a damaged file is estimated again, not trusted
            log.warning("%s: unreadable (%s); estimating again", path, err)
            return None
        if not isinstance(stored, dict) or stored.get("source") != self.source:
            log.info("%s: made for another checkpoint or setting; estimating again", path)
            return None
        return stored["buffers"]
