"""Networks: any timm backbone with an n-channel stem, pooling, an embedding, a head.

    image (B, C, H, W) -> backbone (timm, num_classes=0, global_pool="") -> pool
    ("avg" | "catavgmax") -> embedding (Linear + BatchNorm1d, optional) -> dropout ->
    head (cellblock.nets.heads) -> NetOutput(logits, embeddings)

A network variant is configuration (:class:`NetConfig`), never a subclass. The backbone
and its pretrained weights (a local file or ``s3://``, never a model hub) come from
``cellblock.nets.pretrained``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from cellblock.configtools import config_from_dict
from cellblock.errors import ConfigError
from cellblock.nets.heads import HEADS, make_head
from cellblock.nets.pretrained import create_backbone, resolve_pretrained
from cellblock.nets.torchcompat import import_timm

__all__ = [
    "POOLS",
    "Net",
    "NetConfig",
    "NetOutput",
    "build_net",
    "net_config_json",
    "net_summary",
    "resolve_pretrained",  # cellblock.nets.pretrained, re-exported
]

log = logging.getLogger(__name__)
POOLS = ("avg", "catavgmax")
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
    "head": (lambda v: v in HEADS, f"one of {', '.join(HEADS)}"),
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


def feature_channels(backbone: nn.Module) -> int:
    """Channels of what the backbone returns (built with ``num_classes=0, global_pool=""``).

    Not always ``num_features``: models with a conv head (MobileNetV3, EfficientNet-
    style ``conv_head``) still apply it, and timm reports that width as
    ``head_hidden_size`` (MobileNetV3-small: 576 features, 1024 out of the head).
    """
    # timm's attribute; nn.Module's __getattr__ types it as Tensor | Module
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)  # type: ignore[arg-type]


class NetOutput(NamedTuple):
    """What a forward pass returns.

    Attributes:
        logits: ``(B, num_classes)`` prediction logits (never margin-penalized).
        embeddings: ``(B, D)`` features before dropout and head, for profiling.
    """

    logits: Tensor
    embeddings: Tensor


class Net(nn.Module):
    """Backbone, pooling, optional embedding, dropout, head (see the module docstring).

    Args:
        cfg: The configuration.
        backbone: A timm model made with ``num_classes=0, global_pool=""`` (feature maps).
    """

    def __init__(self, cfg: NetConfig, backbone: nn.Module) -> None:
        super().__init__()
        timm = import_timm()
        self.cfg = cfg
        self.backbone = backbone
        self.pool = timm.layers.SelectAdaptivePool2d(pool_type=cfg.pool, flatten=True)
        self.pooled_dim = feature_channels(backbone) * self.pool.feat_mult()
        d = cfg.embedding_dim
        self.embedding = (
            nn.Sequential(nn.Linear(self.pooled_dim, d), nn.BatchNorm1d(d)) if d else nn.Identity()
        )
        self.embedding_dim = d or self.pooled_dim
        self.dropout = nn.Dropout(cfg.dropout)
        knobs = ("scale", "margin", "arcface_weight", "label_smoothing", "easy_margin")
        kw = {k: getattr(cfg, k) for k in knobs}
        self.head = make_head(cfg.head, self.embedding_dim, cfg.num_classes, **kw)

    def forward(self, x: Tensor) -> NetOutput:
        """``x``: ``(B, in_channels, H, W)`` -> :class:`NetOutput`."""
        embeddings = self.embedding(self.pool(self.backbone(x)))
        return NetOutput(self.head(self.dropout(embeddings)), embeddings)

    def loss(self, output: NetOutput, labels: Tensor) -> Tensor:
        """The head's training loss (margins apply here only); ``labels``: ``(B,)`` int64."""
        return self.head.loss(output.embeddings, output.logits, labels)


def build_net(cfg: NetConfig, cache_dir: str | Path | None = None) -> Net:
    """The network ``cfg`` describes.

    Args:
        cfg: The configuration.
        cache_dir: Cache folder for ``s3://`` checkpoints (see :func:`resolve_pretrained`).
    """
    backbone = create_backbone(
        cfg.backbone, args=cfg.backbone_args, in_channels=cfg.in_channels,
        drop_path_rate=cfg.drop_path_rate, pretrained=cfg.pretrained, cache_dir=cache_dir,
    )  # fmt: skip
    return Net(cfg, backbone)


def _blocks(net: Net) -> list[tuple[str, nn.Module]]:
    """Top-level blocks: the backbone's children (into the only child with weights)."""
    prefix, module = "backbone", net.backbone
    while True:
        kids = [(n, m) for n, m in module.named_children() if not isinstance(m, nn.Identity)]
        with_params = [(n, m) for n, m in kids if any(True for _ in m.parameters())]
        if len(with_params) != 1:  # e.g. DenseNet: all in `features`
            break
        prefix, module = f"{prefix}.{with_params[0][0]}", with_params[0][1]
    tail = [("pool", net.pool), ("embedding", net.embedding), ("head", net.head)]
    return [*((f"{prefix}.{n}", m) for n, m in kids), *tail]


def net_summary(net: Net, input_shape: tuple[int, ...]) -> str:
    """A table of the top-level blocks (output shape, parameters) and the parameter count.

    Args:
        net: The network (run once in eval mode on zeros; its mode is restored).
        input_shape: ``(C, H, W)`` or ``(B, C, H, W)``.
    """
    shape = tuple(input_shape) if len(input_shape) == 4 else (1, *input_shape)
    rows: list[tuple[str, str, str, str]] = [("block", "type", "output", "params")]

    def hook(name: str, mod: nn.Module, _inputs: Any, out: Any) -> None:
        params = sum(p.numel() for p in mod.parameters())
        out = out[0] if isinstance(out, tuple) else out  # NetOutput: its logits
        rows.append((name, type(mod).__name__, "x".join(map(str, out.shape)), f"{params:,}"))

    hooks = [m.register_forward_hook(functools.partial(hook, n)) for n, m in _blocks(net)]
    training = net.training
    try:
        net.eval()
        device = next(net.parameters()).device
        with torch.no_grad():
            net(torch.zeros(shape, device=device))
    finally:
        net.train(training)
        for h in hooks:
            h.remove()
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"{a:<{w[0]}}  {b:<{w[1]}}  {c:<{w[2]}}  {d:>{w[3]}}" for a, b, c, d in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(
        f"input {'x'.join(map(str, shape))}; parameters: {total:,} (trainable {trainable:,})"
    )
    return "\n".join(lines)


def net_config_json(cfg: NetConfig) -> dict[str, Any]:
    """What ``mknet.py`` writes to ``net_config.json``: the network's input and outputs.

    ``embedding_dim`` is resolved: with ``cfg.embedding_dim == 0``, the pooled backbone width.
    """
    out = {k: getattr(cfg, k) for k in ("backbone", "in_channels", "input_size", "num_classes")}
    out["input_shape"] = [cfg.in_channels, cfg.input_size, cfg.input_size]
    out["embedding_dim"] = cfg.embedding_dim
    if not cfg.embedding_dim:
        with torch.device("meta"):  # shapes only: no memory, no weights
            backbone = import_timm().create_model(cfg.backbone, num_classes=0, global_pool="")
        out["embedding_dim"] = feature_channels(backbone) * (2 if cfg.pool == "catavgmax" else 1)
    return out | {"head": cfg.head, "pool": cfg.pool}
