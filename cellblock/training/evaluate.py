"""Validation metrics on held-out experiments: loss, accuracy, top-3, per cell type, and
the same for treatment wells apart from control wells.

Kaggle scores RxRx1 on treatment wells only. Control wells (positive controls: 30
siRNAs present on every plate, seen in every training experiment) are far easier, so
the overall accuracy of a validation split flatters a model; ``treatment_accuracy`` is
the figure to compare with a leaderboard.

Runs in eval mode without touching any global RNG (the loader gets its own generator),
so validating mid-run leaves training bit-for-bit unchanged.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Mapping
from functools import partial

import numpy as np
import torch

from cellblock.data.normalize import BatchNormalizer
from cellblock.nets.bnstats import Buffers, estimate_bn_stats, using_bn_buffers
from cellblock.nets.models import Net
from cellblock.precision import autocast as amp

__all__ = ["group_statistics", "validate"]


def flatten_sites(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Well items ``(B, S, C, H, W)`` -> sites ``(B*S, C, H, W)`` with labels repeated.

    Site items ``(B, C, H, W)`` pass through unchanged.
    """
    if images.ndim != 5:
        return images, labels
    return images.flatten(0, 1), labels.repeat_interleave(images.shape[1])


def _prepare(
    images: torch.Tensor,
    index: np.ndarray,
    normalize: BatchNormalizer,
    device: torch.device,
    channels_last: bool,
) -> tuple[torch.Tensor, int]:
    """A uint8 batch as the network's input ``(N, C, H, W)``, and sites per item."""
    images = normalize(images.to(device, non_blocking=True), torch.from_numpy(index))
    sites = images.shape[1] if images.ndim == 5 else 1
    images = images.flatten(0, 1) if images.ndim == 5 else images  # channels_last: 4-D
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, sites


def group_statistics(
    net: Net, batches: Iterable, groups: Mapping[int, str], prepare: Callable
) -> dict[str, Buffers]:
    """BatchNorm statistics of each group's batches (``cellblock.nets.bnstats``).

    Args:
        net: The network.
        batches: ``SiteBatch`` batches, each of one group, a group's batches together.
        groups: Site-table index label -> group (plate or experiment).
        prepare: ``(images, index) -> (inputs, sites)`` as the network takes them.

    Raises:
        ValueError: A batch mixes groups, or a group's batches are not contiguous.
    """
    stats: dict[str, Buffers] = {}

    def group_of(batch: tuple) -> str:
        keys = {groups[int(i)] for i in batch[2]}
        if len(keys) != 1:
            raise ValueError(f"validate: a batch mixes BatchNorm groups {sorted(keys)}")
        return keys.pop()

    for key, run in itertools.groupby(batches, key=group_of):
        if key in stats:
            raise ValueError(f"validate: the batches of {key} are not contiguous")
        stats[key] = estimate_bn_stats(net, (prepare(im, index)[0] for im, _, index in run))
    return stats


@torch.no_grad()
def validate(
    net: Net,
    batches: Iterable,
    *,
    normalize: BatchNormalizer,
    cell_types: dict[int, str],
    device: torch.device,
    autocast: torch.dtype | None = None,
    channels_last: bool = False,
    well_types: Mapping[int, str] | None = None,
    bn_groups: Mapping[int, str] | None = None,
) -> dict[str, float]:
    """Metrics of ``net`` over ``batches``.

    Args:
        net: The network (put in eval mode here, returned to its previous mode).
        batches: ``SiteBatch`` batches (``cellblock.data.loader.make_loader``); well
            items ``(B, S, C, H, W)`` are scored on the mean logits of their sites.
        normalize: Turns the uint8 batches into the network's inputs (on ``device``).
        cell_types: Site-table index label -> cell type, for the per-cell-type accuracy.
        device: Where the network is.
        autocast: The autocast dtype (training's, ``cellblock.precision``); None: fp32.
        channels_last: Convert images to channels-last memory format.
        well_types: Site-table index label -> well type (``treatment``,
            ``positive_control``, ...), for the treatment/control split; None: no split.
        bn_groups: Row label -> plate (experiment), for a run trained by ``data.batch_by``:
            each group is scored with BatchNorm statistics of its own items, as in
            prediction (``batches`` are read twice and must not mix groups). None: the
            trained statistics.

    Returns:
        ``n``, ``loss`` (the head's loss, mean over items), ``accuracy``, ``top3`` and
        ``acc_<cell type>`` per cell type; with ``well_types`` also ``n_treatment``,
        ``treatment_accuracy``, ``treatment_top3``, ``control_accuracy`` (NaN where a
        split has no such items) and ``treatment_acc_<cell type>``.
    """
    training = net.training
    net.eval()
    tally = _Tally(cell_types, well_types)
    prepare = partial(_prepare, normalize=normalize, device=device, channels_last=channels_last)
    try:
        stats: dict[str, Buffers] = {}
        if bn_groups is not None:
            with amp(device, autocast):
                stats = group_statistics(net, batches, bn_groups, prepare)
        for images, labels, index in batches:
            inputs, sites = prepare(images, index)
            labels = torch.from_numpy(labels).to(device, non_blocking=True)
            with (
                _statistics_of(net, stats, bn_groups, index),
                amp(device, autocast),
            ):
                out = net(inputs)
                loss = net.loss(out, labels.repeat_interleave(sites))
            logits = out.logits.float().unflatten(0, (-1, sites)).mean(1)  # a well: mean of sites
            tally.add(logits, labels, float(loss), index)
    finally:
        net.train(training)
    return tally.metrics()


def _statistics_of(
    net: Net, stats: dict[str, Buffers], groups: Mapping[int, str] | None, index: np.ndarray
) -> contextlib.AbstractContextManager:
    """The BatchNorm statistics of the batch's group loaded into ``net`` (a context)."""
    if groups is None:
        return contextlib.nullcontext()
    return using_bn_buffers(net, stats[groups[int(index[0])]])


class _Tally:
    """Hits, top-3 hits, losses, cell and well types of the items scored so far."""

    def __init__(self, cell_types: Mapping[int, str], well_types: Mapping[int, str] | None):
        self.cell_types, self.well_types = cell_types, well_types
        self.losses: list[float] = []
        self.hits: list[np.ndarray] = []
        self.hits3: list[np.ndarray] = []
        self.types: list[str] = []
        self.wells: list[str] = []

    def add(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        loss: float,
        index: np.ndarray,
    ) -> None:
        top = logits.topk(min(3, logits.shape[1]), dim=1).indices
        self.losses.append(loss * len(labels))
        self.hits.append((top[:, 0] == labels).cpu().numpy())
        self.hits3.append((top == labels[:, None]).any(1).cpu().numpy())
        self.types += [self.cell_types[int(i)] for i in index]
        if self.well_types is not None:
            self.wells += [self.well_types[int(i)] for i in index]

    def metrics(self) -> dict[str, float]:
        if not self.hits:
            return {"n": 0}
        hit, hit3 = np.concatenate(self.hits), np.concatenate(self.hits3)
        kinds = np.array(self.types)
        metrics = {
            "n": len(hit),
            "loss": sum(self.losses) / len(hit),
            "accuracy": float(hit.mean()),
            "top3": float(hit3.mean()),
        }
        for kind in sorted(set(self.types)):
            metrics[f"acc_{kind}"] = float(hit[kinds == kind].mean())
        if self.well_types is not None:
            treated = np.array(self.wells) == "treatment"
            metrics |= {
                "n_treatment": int(treated.sum()),
                "treatment_accuracy": _mean(hit[treated]),
                "treatment_top3": _mean(hit3[treated]),
                "control_accuracy": _mean(hit[~treated]),
            }
            for kind in sorted(set(self.types)):
                metrics[f"treatment_acc_{kind}"] = _mean(hit[treated & (kinds == kind)])
        return metrics


def _mean(hits: np.ndarray) -> float:
    """The hit rate; NaN for no items (a column that stays, a value that says so)."""
    return float(hits.mean()) if len(hits) else float("nan")
