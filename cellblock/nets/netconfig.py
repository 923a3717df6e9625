"""A network's description, ``NetConfig``: validated, frozen, and light to import.

The ``net`` section of a setup's ``config.yaml``. Reading, checking and writing one needs
no torch (a login node submitting jobs reads configs); only the backbone name's check
asks timm, when a config is made. ``cellblock.nets.models.build_net`` makes the network.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from cellblock.configtools import config_from_dict
from cellblock.errors import ConfigError

__all__ = ["HEAD_NAMES", "POOLS", "NetConfig"]

POOLS = ("avg", "catavgmax")
# the keys of cellblock.nets.heads.HEADS (tests/test_models.py checks they agree)
HEAD_NAMES = ("softmax", "cosface", "arcface", "ce+arcface")
_HUB_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")
# timm arguments create_backbone sets itself from NetConfig's own fields
_OWN = {"num_classes", "global_pool", "in_chans", "drop_path_rate", "pretrained"}


def _num(lo: float, hi: float, integer: bool = False, optional: bool = False):
    """(check, description): a number in [lo, hi]; an int if ``integer``; None if ``optional``."""
    types = (int,) if integer else (int, float)

    def ok(v: Any) -> bool:
        if v is None:
            return optional
        return isinstance(v, types) and not isinstance(v, bool) and lo <= v <= hi

    kind = "an integer" if integer else "a number"
    return ok, f"{'null or ' if optional else ''}{kind} in [{lo}, {hi}]"


_INF = float("inf")
# field -> (check, what a valid value is); an int is accepted wherever a float is.
_CHECKS = {
    "backbone": (lambda v: isinstance(v, str) and bool(v), "a timm model name"),
    "in_channels": _num(1, _INF, integer=True),
    "num_classes": _num(2, _INF, integer=True),
    "embedding_dim": _num(0, _INF, integer=True),
    "pool": (lambda v: v in POOLS, f"one of {', '.join(POOLS)}"),
    "head": (lambda v: v in HEAD_NAMES, f"one of {', '.join(HEAD_NAMES)}"),
    "label_smoothing": _num(0, 0.999),
    "margin": _num(0, 3.14, optional=True),
    "scale": _num(1e-6, _INF),
    "arcface_weight": _num(0, 1),
    "easy_margin": (lambda v: isinstance(v, bool), "true or false"),
    "dropout": _num(0, 0.999),
    "input_size": _num(8, _INF, integer=True),
    "pretrained": (lambda v: v is None or (isinstance(v, str) and bool(v)), "null or a path"),
    "drop_path_rate": _num(0, 0.999, optional=True),
    "backbone_args": (
        lambda v: (
            isinstance(v, dict) and all(isinstance(k, str) for k in v) and not v.keys() & _OWN
        ),
        "a mapping of timm keyword arguments (not num_classes, global_pool, in_chans, "
        "drop_path_rate, pretrained: those are set from the other fields)",
    ),
}


@dataclass(frozen=True)
class NetConfig:
    """The whole description of a network; ``build_net(cfg)`` makes it.

    Each field is documented beside its default. Validated on construction (ConfigError
    naming the field); build from a config.yaml section with :meth:`from_dict`.
    """

    backbone: str = "densenet121"  # any timm model name (no hub: weights via pretrained)
    in_channels: int = 6  # image channels; the stem is adapted to them (RxRx1: 6 stains)
    num_classes: int = 1139  # 1,108 siRNAs + 30 positive controls + 1 negative
    embedding_dim: int = 512  # Linear + BatchNorm1d width D; 0: pooled features, no layer
    pool: str = "avg"  # "avg" | "catavgmax" (average and max concatenated: 2x width)
    head: str = "softmax"  # "softmax" | "cosface" | "arcface" | "ce+arcface" (cellblock.nets.heads)
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    margin: float | None = None  # None: 0.35 cosface, 0.5 arcface (radians)
    scale: float = 30.0  # logit scale s of the cosine heads
    arcface_weight: float = 0.2  # mixed head: (1 - w) CE + w ArcFace
    easy_margin: bool = False  # ArcFace: margin only where cos > 0
    dropout: float = 0.0  # before the head
    input_size: int = 512  # square crop, pixels
    pretrained: str | None = None  # None | local file | s3://bucket/key (timm checkpoint)
    drop_path_rate: float | None = None  # stochastic depth; None: backbone default
    # extra timm.create_model arguments: a variant of the backbone as configuration, e.g.
    # {channels: [64, 96, 96, 192]} widens test_resnet (lists become tuples)
    backbone_args: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, (ok, what) in _CHECKS.items():
            value = getattr(self, name)
            if not ok(value):
                raise ConfigError(f"net config: {name} must be {what}, got {value!r}")
        if self.backbone.startswith(_HUB_PREFIXES):
            raise ConfigError(f"net config: backbone {self.backbone!r}: no model hub here")
        # timm (so torch) only here: reading or writing a config does not need it
        from cellblock.nets.torchcompat import import_timm

        if not import_timm().is_model(self.backbone):
            close = difflib.get_close_matches(self.backbone, import_timm().list_models(), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"net config: backbone {self.backbone!r} is not a timm model{hint}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "net config") -> NetConfig:
        """A validated config from a mapping (e.g. a config.yaml section).

        Args:
            d: Keys are field names; missing keys take their defaults.
            where: How errors name the mapping, e.g. "config.yaml: net".

        Raises:
            ConfigError: Naming an unknown (e.g. misspelt) key, or a bad value.
        """
        return config_from_dict(cls, d, where, "net config")

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON/YAML-ready; ``from_dict(to_dict())`` is the same config."""
        return dataclasses.asdict(self)
