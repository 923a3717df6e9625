"""Networks: any timm backbone with an n-channel stem, pooling, an embedding, a head.

    image (B, C, H, W) -> backbone (timm, num_classes=0, global_pool="") -> pool
    ("avg" | "catavgmax") -> embedding (Linear + BatchNorm1d, optional) -> dropout ->
    head (cellblock.nets.heads) -> NetOutput(logits, embeddings)

A network variant is configuration (:class:`NetConfig`), never a subclass. The backbone
and its pretrained weights (a local file or ``s3://``, never a model hub) come from
``cellblock.nets.pretrained``.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from cellblock.nets.heads import make_head
from cellblock.nets.netconfig import NetConfig
from cellblock.nets.pretrained import create_backbone, resolve_pretrained
from cellblock.nets.torchcompat import import_timm

__all__ = [
    "Net",
    "NetOutput",
    "build_net",
    "net_config_json",
    "net_summary",
    "resolve_pretrained",  # cellblock.nets.pretrained, re-exported
]

log = logging.getLogger(__name__)


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
