"""The autocast dtype of a device: :func:`cellblock.devices.resolve_precision` on torch.

Training (``train.precision``) and prediction (always ``auto``) take their autocast dtype
from here, so both follow one rule: bf16 where the GPU computes it natively, fp16 (with a
``GradScaler`` in training) where it does not, fp32 on CPU.
"""

from __future__ import annotations

import torch

from cellblock.devices import resolve_precision

__all__ = ["autocast", "autocast_dtype", "device_precision"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def device_precision(requested: str, device: torch.device) -> str:
    """``bf16``, ``fp16`` or ``fp32`` for ``requested`` (``auto``, ...) on ``device``."""
    cuda = device.type == "cuda"
    capability = torch.cuda.get_device_capability(device) if cuda else None
    return resolve_precision(requested, cuda, capability)


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision; None: fp32, autocast off."""
    return _DTYPES.get(precision)


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` on ``device``'s type; off for None (fp32)."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
