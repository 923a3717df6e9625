"""``BatchAugment``: augmentations of whole batches, on the device the batch is on.

Run after the batch reaches the GPU, so augmentation costs the CPU nothing and the
loader workers only read and normalize. Random parameters are drawn on the CPU from
the module's own ``torch.Generator`` (a few numbers per sample) and then moved to the
batch's device: the same seed gives the same batch on CPU and GPU, and the generator
state is part of ``state_dict()`` so a resumed run continues the same stream.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from torch import nn

from cellblock.data.config import AugmentConfig

__all__ = ["BatchAugment", "d4"]


def d4(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element ``k`` (0-7) of the dihedral group on the last two axes.

    ``k % 4`` quarter turns, then a horizontal flip if ``k >= 4``.

    Args:
        x: ``(..., H, W)`` with ``H == W`` for odd turns.
        k: The transform, 0 = identity.
    """
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


class BatchAugment(nn.Module):
    """Random D4, resized crop, erasing and intensity jitter, per sample; identity in eval.

    Args:
        config: Which augmentations, and how strong.
        out_size: Side of the square output of the random resized crop; None = the
            input's size (then a crop scale of ``(1, 1)`` means no resampling).
        seed: Seed of the module's generator.
    """

    def __init__(self, config: AugmentConfig, out_size: int | None = None, seed: int = 0):
        super().__init__()
        self.config = config
        self.out_size = out_size
        self.generator = torch.Generator().manual_seed(seed)

    def get_extra_state(self) -> dict:
        return {"rng": self.generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["rng"])

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Augment ``x``: ``(..., C, H, W)``; every leading index is its own sample.

        Args:
            x: A float batch, e.g. ``(B, C, H, W)`` sites or ``(B, S, C, H, W)`` wells.
        """
        if not self.training:
            return x
        lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
        x = x.reshape(-1, c, h, w)
        cfg = self.config
        if cfg.d4:
            x = self._d4(x)
        size = self.out_size or h
        if cfg.crop_scale != (1.0, 1.0) or (size, size) != (h, w):
            x = self._resized_crop(x, size)
        if cfg.erase_p > 0:
            x = self._erase(x)
        if cfg.jitter_scale > 0 or cfg.jitter_shift > 0:
            x = self._jitter(x)
        return x.reshape(*lead, *x.shape[-3:])

    def _d4(self, x: torch.Tensor) -> torch.Tensor:
        square = x.shape[-1] == x.shape[-2]
        # odd quarter turns would change a non-square shape: use flips only there
        choices = torch.arange(8) if square else torch.tensor([0, 2, 4, 6])
        ks = choices[(self._rand(len(x)) * len(choices)).long()]
        out = torch.empty_like(x)
        for k in ks.unique().tolist():
            idx = (ks == k).nonzero().squeeze(1).to(x.device)
            out[idx] = d4(x[idx], k)
        return out

    def _resized_crop(self, x: torch.Tensor, size: int) -> torch.Tensor:
        n = len(x)
        lo, hi = self.config.crop_scale
        area = lo + (hi - lo) * self._rand(n)
        rlo, rhi = math.log(self.config.crop_ratio[0]), math.log(self.config.crop_ratio[1])
        ratio = torch.exp(rlo + (rhi - rlo) * self._rand(n))
        # crop width/height as fractions of the image; clamp to fit
        cw = torch.sqrt(area * ratio).clamp(max=1.0)
        ch = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (1 - cw) * (2 * self._rand(n) - 1)  # centre offset in [-1, 1] coordinates
        cy = (1 - ch) * (2 * self._rand(n) - 1)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = cw, cx
        theta[:, 1, 1], theta[:, 1, 2] = ch, cy
        theta = theta.to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        lo, hi = self.config.erase_scale
        apply = self._rand(n) < self.config.erase_p
        area = lo + (hi - lo) * self._rand(n)
        ratio = torch.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * self._rand(n))
        eh = (torch.sqrt(area / ratio) * h).round().clamp(1, h)
        ew = (torch.sqrt(area * ratio) * w).round().clamp(1, w)
        y0 = ((h - eh + 1) * self._rand(n)).floor()
        x0 = ((w - ew + 1) * self._rand(n)).floor()
        dev = x.device
        ys = torch.arange(h, device=dev)[None, :, None]
        xs = torch.arange(w, device=dev)[None, None, :]
        y0, x0, eh, ew = (t.to(dev)[:, None, None] for t in (y0, x0, eh, ew))
        box = (ys >= y0) & (ys < y0 + eh) & (xs >= x0) & (xs < x0 + ew)
        box &= apply.to(dev)[:, None, None]
        # 0 is the normalized mean: an erased patch looks like empty background
        return x.masked_fill(box[:, None], 0.0)

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        scale = 1 + self.config.jitter_scale * (2 * self._rand(n, c) - 1)
        shift = self.config.jitter_shift * (2 * self._rand(n, c) - 1)
        scale, shift = (
            t.to(device=x.device, dtype=x.dtype)[:, :, None, None] for t in (scale, shift)
        )
        return x * scale + shift
