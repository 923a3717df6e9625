"""Validation metrics on held-out experiments: loss, accuracy, top-3, accuracy per cell type.

Runs in eval mode without touching any global RNG (the loader gets its own generator),
so validating mid-run leaves training bit-for-bit unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

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

    Returns:
        ``n``, ``loss`` (the head's loss, mean over items), ``accuracy``, ``top3`` and
        ``acc_<cell type>`` per cell type.
    """
    training = net.training
    net.eval()
    losses, hits, hits3, types = [], [], [], []
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
    return metrics
