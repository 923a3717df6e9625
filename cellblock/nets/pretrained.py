"""A network's timm backbone and its pretrained weights.

Pretrained weights come from a local file or ``s3://bucket/key`` (downloaded with
``cellblock.remote.cache`` into a cache folder), never from a model hub; a 3-channel timm
checkpoint is adapted to ``in_channels`` by timm itself (``pretrained_cfg_overlay=
dict(file=...)`` + ``in_chans``, which calls ``timm.models.adapt_input_conv``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from cellblock.errors import ConfigError
from cellblock.nets.torchcompat import import_timm
from cellblock.remote.cache import cached_copy

__all__ = ["create_backbone", "resolve_pretrained"]

log = logging.getLogger(__name__)


def resolve_pretrained(source: str, cache_dir: str | Path | None = None) -> Path:
    """A local path for ``source``: the file itself, or ``s3://`` downloaded into a cache.

    Downloads are verified (size + ETag), atomic, and skipped when the cached copy is
    intact. Without AWS credentials the request is anonymous (public buckets).

    Args:
        source: A local file or ``s3://bucket/key``.
        cache_dir: Cache folder; None: ``$CELLBLOCK_CACHE``, else ``~/.cache/cellblock``.
    """
    if not source.startswith("s3://"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ConfigError(f"pretrained: no such file {source!r}")
        return path
    try:
        return cached_copy(source, cache_dir)
    except ConfigError as e:
        raise ConfigError(f"pretrained: {e}") from None


def create_backbone(
    backbone: str,
    *,
    args: Mapping[str, Any],
    in_channels: int,
    drop_path_rate: float | None,
    pretrained: str | None,
    cache_dir: str | Path | None = None,
) -> nn.Module:
    """A timm backbone (feature maps, no pooling), pretrained if asked.

    Takes ``NetConfig``'s fields, not the config: ``cellblock.nets.models`` builds on this
    module, never the other way.

    Args:
        backbone: The timm model name (``net.backbone``).
        args: More timm arguments (``net.backbone_args``; lists become tuples).
        in_channels: Input channels (a 3-channel checkpoint's stem is adapted).
        drop_path_rate: Stochastic depth rate (None: the backbone's default).
        pretrained: A local file or ``s3://bucket/key`` (timm checkpoint), or None.
        cache_dir: Cache folder for ``s3://`` checkpoints (see :func:`resolve_pretrained`).
    """
    timm = import_timm()
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    kwargs.update(
        num_classes=0, global_pool="", in_chans=in_channels, drop_path_rate=drop_path_rate
    )
    if pretrained is None:
        try:
            return timm.create_model(backbone, pretrained=False, **kwargs)
        except TypeError as e:  # an argument the backbone does not take
            raise ConfigError(f"net config: backbone_args {dict(args)}: {e}") from None
    os.environ["HF_HUB_OFFLINE"] = "1"  # the file override below never needs a hub
    path = resolve_pretrained(pretrained, cache_dir)
    try:
        overlay = dict(file=str(path))
        model = timm.create_model(backbone, True, pretrained_cfg_overlay=overlay, **kwargs)
        stored = timm.models.load_state_dict(str(path))
    except (RuntimeError, OSError, ValueError) as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"pretrained {pretrained} into {backbone}: {first}") from None
    missing = [k for k in model.state_dict() if k not in stored and "num_batches" not in k]
    if missing:
        n, first = len(missing), missing[0]
        raise ConfigError(f"pretrained {pretrained}: not {backbone} ({n} missing: {first})")
    log.info("%s: weights from %s, stem for %d channels", backbone, path, in_channels)
    return model
