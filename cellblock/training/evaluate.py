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

from collections.abc import Iterable, Mapping

import numpy as np
import torch

from cellblock.data import BatchNormalizer
from cellblock.models import Net

__all__ = ["validate"]


def flatten_sites(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Well items ``(B, S, C, H, W)`` -> sites ``(B*S, C, H, W)`` with labels repeated.

    Site items ``(B, C, H, W)`` pass through unchanged.
    """
    if images.ndim != 5:
        return images, labels
    return images.flatten(0, 1), labels.repeat_interleave(images.shape[1])


@torch.no_grad()
def validate(
    net: Net,
    batches: Iterable,
    normalize: BatchNormalizer,
    cell_types: dict[int, str],
    device: torch.device,
    autocast: bool = False,
    channels_last: bool = False,
    well_types: Mapping[int, str] | None = None,
) -> dict[str, float]:
    """Metrics of ``net`` over ``batches``.

    Args:
        net: The network (put in eval mode here, returned to its previous mode).
        batches: ``SiteBatch`` batches (``cellblock.data.make_loader``); well
            items ``(B, S, C, H, W)`` are scored on the mean logits of their sites.
        normalize: Turns the uint8 batches into the network's inputs (on ``device``).
        cell_types: Site-table index label -> cell type, for the per-cell-type accuracy.
        device: Where the network is.
        autocast: bf16 autocast (CUDA).
        channels_last: Convert images to channels-last memory format.
        well_types: Site-table index label -> well type (``treatment``,
            ``positive_control``, ...), for the treatment/control split; None: no split.

    Returns:
        ``n``, ``loss`` (the head's loss, mean over items), ``accuracy``, ``top3`` and
        ``acc_<cell type>`` per cell type; with ``well_types`` also ``n_treatment``,
        ``treatment_accuracy``, ``treatment_top3``, ``control_accuracy`` (NaN where a
        split has no such items) and ``treatment_acc_<cell type>``.
    """
    training = net.training
    net.eval()
    losses: list[float] = []
    hits: list[np.ndarray] = []
    hits3: list[np.ndarray] = []
    types: list[str] = []
    wells: list[str] = []
    try:
        for images, labels, index in batches:
            images = normalize(images.to(device, non_blocking=True), torch.from_numpy(index))
            labels = torch.from_numpy(labels).to(device, non_blocking=True)
            sites = images.shape[1] if images.ndim == 5 else 1
            images = images.flatten(0, 1) if images.ndim == 5 else images  # channels_last: 4-D
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                out = net(images)
                loss = net.loss(out, labels.repeat_interleave(sites))
            logits = out.logits.float().unflatten(0, (-1, sites)).mean(1)  # a well: mean of sites
            top = logits.topk(min(3, logits.shape[1]), dim=1).indices
            losses.append(float(loss) * len(labels))
            hits.append((top[:, 0] == labels).cpu().numpy())
            hits3.append((top == labels[:, None]).any(1).cpu().numpy())
            types.extend(cell_types[int(i)] for i in index)
            if well_types is not None:
                wells.extend(well_types[int(i)] for i in index)
    finally:
        net.train(training)
    if not hits:
        return {"n": 0}
    hit, hit3, kinds = np.concatenate(hits), np.concatenate(hits3), np.array(types)
    metrics = {
        "n": len(hit),
        "loss": sum(losses) / len(hit),
        "accuracy": float(hit.mean()),
        "top3": float(hit3.mean()),
    }
    for kind in sorted(set(types)):
        metrics[f"acc_{kind}"] = float(hit[kinds == kind].mean())
    if well_types is not None:
        treated = np.array(wells) == "treatment"
        metrics |= {
            "n_treatment": int(treated.sum()),
            "treatment_accuracy": _mean(hit[treated]),
            "treatment_top3": _mean(hit3[treated]),
            "control_accuracy": _mean(hit[~treated]),
        }
        for kind in sorted(set(types)):
            metrics[f"treatment_acc_{kind}"] = _mean(hit[treated & (kinds == kind)])
    return metrics


def _mean(hits: np.ndarray) -> float:
    """The hit rate; NaN for no items (a column that stays, a value that says so)."""
    return float(hits.mean()) if len(hits) else float("nan")
