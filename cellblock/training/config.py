"""``TrainConfig``: every knob of the optimization loop, frozen and validated.

The ``train:`` section of a setup's ``config.yaml``; an unknown or misspelt key is a
``ConfigError`` naming it. The learning-rate schedule has its own horizon
(``schedule_iters``), independent of ``train.py N``: training to 6 and then to 12
follows exactly the curve of training to 12 at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cellblock.configtools import config_from_dict
from cellblock.devices import PRECISIONS
from cellblock.errors import ConfigError

__all__ = ["DEVICES", "OPTIMIZERS", "SCHEDULES", "TrainConfig"]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")
DEVICES = ("auto", "cpu", "cuda")
MAX_LR = 10  # the peak rate after lr_reference_batch scaling, too: beyond it weights blow up


def _int(lo: int):
    return (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo,
        f"an integer >= {lo}",
    )


def _float(lo: float, hi: float):
    ok = lambda v: isinstance(v, int | float) and not isinstance(v, bool) and lo <= v <= hi  # noqa: E731
    return ok, f"a number in [{lo}, {hi}]"


def _bool():
    return (lambda v: isinstance(v, bool)), "true or false"


def _one_of(options: tuple[str, ...]):
    return (lambda v: v in options), f"one of {', '.join(options)}"


_CHECKS = {
    "batch_size": _int(1),
    "lr": _float(0, MAX_LR),
    "lr_reference_batch": (
        lambda v: v is None or (isinstance(v, int) and v >= 1),
        "null or an integer >= 1",
    ),
    "weight_decay": _float(0, 1),
    "optimizer": _one_of(OPTIMIZERS),
    "momentum": _float(0, 0.999),
    "schedule": _one_of(SCHEDULES),
    "schedule_iters": _int(1),
    "warmup_iters": _int(0),
    "final_lr_fraction": _float(0, 1),
    "grad_accum": _int(1),
    "grad_clip": _float(0, float("inf")),
    "checkpoint_every": _int(1),
    "snapshot_every": _int(0),
    "validate_every": _int(1),
    "log_every": _int(1),
    "seed": _int(0),
    "workers": _int(0),
    "device": _one_of(DEVICES),
    "amp": _bool(),
    "precision": _one_of(PRECISIONS),
    "channels_last": _bool(),
    "compile": _bool(),
    "tensorboard": _bool(),
}


@dataclass(frozen=True)
class TrainConfig:
    """How a network is trained; each field is documented beside its default.

    The effective learning rate is ``lr`` times ``batch_size * grad_accum * processes /
    lr_reference_batch`` when ``lr_reference_batch`` is set (the linear scaling rule),
    else ``lr`` as given.
    """

    batch_size: int = 32  # items per micro-batch and process (x grad_accum x processes)
    lr: float = 1e-3  # peak learning rate (after warmup)
    lr_reference_batch: int | None = None  # None: lr as given; N: lr * global batch / N
    weight_decay: float = 0.05  # decoupled (AdamW) or L2 (SGD)
    optimizer: str = "adamw"  # "adamw" | "sgd" (Nesterov)
    momentum: float = 0.9  # SGD only
    schedule: str = "cosine"  # "cosine" (warmup + cosine) | "onecycle" | "constant"
    schedule_iters: int = 10_000  # the schedule's horizon; beyond it the lr stays final
    warmup_iters: int = 100  # linear warmup (onecycle: the rising phase)
    final_lr_fraction: float = 0.01  # lr at schedule_iters, as a fraction of the peak
    grad_accum: int = 1  # micro-batches per optimizer step
    grad_clip: float = 0.0  # max gradient norm; 0 = no clipping
    checkpoint_every: int = 1000  # iterations; the last iteration is always saved
    snapshot_every: int = 1000  # iterations between snapshots/batch_N.hdf; 0 = none
    validate_every: int = 1000  # iterations; the last iteration is always validated
    log_every: int = 10  # iterations per row of log.csv (loss averaged over them)
    seed: int = 0  # model init, data order, augmentation
    workers: int = 2  # DataLoader processes; 0 = load in the training process
    device: str = "auto"  # "auto" (CUDA if there is one) | "cpu" | "cuda"
    amp: bool = True  # false: fp32 whatever ``precision`` says (older setups)
    precision: str = "auto"  # auto: bf16 on GPUs with it, else fp16 + GradScaler; fp32 on CPU
    channels_last: bool = True  # NHWC memory format; CUDA only (ignored on CPU)
    compile: bool = False  # torch.compile the network (slow start, faster steps on GPU)
    tensorboard: bool = True  # also log to RUN/tensorboard (log.csv is always written)

    def __post_init__(self) -> None:
        for name, (ok, what) in _CHECKS.items():
            value = getattr(self, name)
            if not ok(value):
                raise ConfigError(f"train config: {name} must be {what}, got {value!r}")
        self.peak_lr()  # one process already above the cap: say so before any job starts

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str = "train config") -> TrainConfig:
        """A validated config from a mapping (the ``train:`` section of config.yaml).

        Args:
            d: Keys are field names; missing keys take their defaults.
            where: How errors name the mapping, e.g. "config.yaml: train".

        Raises:
            ConfigError: Naming an unknown (e.g. misspelt) key, or a bad value.
        """
        return config_from_dict(cls, d, where, "train config")

    def to_dict(self) -> dict[str, Any]:
        """Every field; ``from_dict(to_dict())`` is the same config."""
        return dataclasses.asdict(self)

    def global_batch(self, world_size: int = 1) -> int:
        """Items per optimizer step over ``world_size`` data-parallel processes."""
        return self.batch_size * self.grad_accum * world_size

    def peak_lr(self, world_size: int = 1) -> float:
        """``lr``, scaled with the global batch if ``lr_reference_batch`` is set.

        Raises:
            ConfigError: The scaled rate is above ``MAX_LR`` (the cap ``lr`` has).
        """
        if self.lr_reference_batch is None:
            return self.lr
        batch = self.global_batch(world_size)
        peak = self.lr * batch / self.lr_reference_batch
        if peak > MAX_LR:
            raise ConfigError(
                f"train config: effective lr {self.lr:g} x global batch {batch} / "
                f"lr_reference_batch {self.lr_reference_batch} = {peak:g} must be <= "
                f"{MAX_LR:g}; lower train.lr or raise train.lr_reference_batch"
            )
        return peak
