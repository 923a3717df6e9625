"""Device rules shared by training, prediction and the worker launchers (torch-free).

- **The job's own GPUs.** A process sees the GPUs its ``CUDA_VISIBLE_DEVICES`` names
  (indices, ``GPU-<uuid>``, ``MIG-<uuid>``), numbered from 0. ``--gpus 1`` means the
  second of *those*; a child process pinned to it must get the parent's second entry
  (parent ``2,3`` -> child ``3``), never the bare ``1`` (which is somebody else's GPU).
- **Precision.** ``auto`` is bf16 where the GPU computes it natively (compute capability
  8.0 and above), fp16 with a gradient scaler where it does not (V100, T4), fp32 on CPU.
  Training and prediction take their autocast dtype from :func:`resolve_precision`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cellblock.errors import UserError

__all__ = ["PRECISIONS", "gpu_count", "resolve_precision", "visible_mask", "worker_gpus"]

MASK_ENV = "CUDA_VISIBLE_DEVICES"
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
BF16_NATIVE_CAPABILITY = (8, 0)


def visible_mask(env: Mapping[str, str]) -> tuple[str, ...] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES``; None when it is unset (every GPU visible)."""
    if MASK_ENV not in env:
        return None
    entries = tuple(e.strip() for e in env[MASK_ENV].split(",") if e.strip())
    # CUDA stops at the first entry it cannot use; "-1" / SLURM's "NoDevFiles" hide all
    usable = []
    for e in entries:
        if not (e.isdigit() or e.startswith(("GPU-", "MIG-"))):
            break
        usable.append(e)
    return tuple(usable)


def gpu_count(env: Mapping[str, str], cuda_count: int) -> int:
    """How many GPUs this process may hand to workers.

    ``cuda_count`` is what CUDA enumerates here. A MIG mask is counted by its entries:
    CUDA enumerates only one MIG instance per process, yet each worker can use one.
    """
    mask = visible_mask(env)
    if mask and any(e.startswith("MIG-") for e in mask):
        return len(mask)
    return cuda_count


def worker_gpus(
    requested: Sequence[str] | None, env: Mapping[str, str], cuda_count: int
) -> tuple[str, ...]:
    """The ``CUDA_VISIBLE_DEVICES`` value of each worker for ``--gpus`` ids of this process.

    Args:
        requested: ``--gpus`` ids (0-based among this process's GPUs); None = all of them.
        env: This process's environment (its ``CUDA_VISIBLE_DEVICES``).
        cuda_count: GPUs CUDA enumerates here (``torch.cuda.device_count()``).

    Raises:
        UserError: An id that is not a number or not among this process's GPUs.
    """
    count = gpu_count(env, cuda_count)
    ids = [str(i) for i in range(count)] if requested is None else list(requested)
    bad = [g for g in ids if not g.isdigit() or int(g) >= count]
    if bad:
        mask = visible_mask(env)
        seen = f"{count} visible" + (f", CUDA_VISIBLE_DEVICES={','.join(mask)}" if mask else "")
        raise UserError(
            f"--gpus {','.join(ids)}: GPU(s) {','.join(bad)} not among this "
            f"job's GPUs ({seen}); ids count from 0 among them"
        )
    mask = visible_mask(env)
    return tuple(mask[int(g)] if mask else g for g in ids)


def resolve_precision(requested: str, cuda: bool, capability: tuple[int, int] | None = None) -> str:
    """The precision to run in: ``bf16``, ``fp16`` or ``fp32``.

    Args:
        requested: ``auto``, ``bf16``, ``fp16`` or ``fp32`` (``train.precision``).
        cuda: Whether the run is on a CUDA device.
        capability: The GPU's compute capability (``torch.cuda.get_device_capability``).

    Raises:
        UserError: An unknown name; ``fp16`` asked for on CPU (CPU autocast has no fp16
            scaler path worth having).
    """
    if requested not in PRECISIONS:
        raise UserError(f"train.precision: {requested!r} is not one of {', '.join(PRECISIONS)}")
    if not cuda:
        if requested == "fp16":
            raise UserError("train.precision: fp16 needs a GPU; use auto, bf16 or fp32 on CPU")
        return "fp32" if requested == "auto" else requested
    if requested != "auto":
        return requested
    native = capability is not None and tuple(capability) >= BF16_NATIVE_CAPABILITY
    return "bf16" if native else "fp16"
