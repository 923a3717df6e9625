"""A trained run as prediction sees it: its checkpoint, config, channels and classes.

    checkpoint = run_checkpoint("runs/synthetic/tiny")        # the latest
    info = load_run_info(checkpoint)                          # config, iteration, widths
    channels = check_channels(info.config, packed, str(checkpoint))

Everything here reads the checkpoint with ``weights_only=True`` on the CPU and checks the
run against a dataset before any network is built, so a prediction job fails on bad
input before it starts workers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cellblock.data.labels import class_sirnas
from cellblock.errors import ConfigError, UserError
from cellblock.nets.models import build_net
from cellblock.store.packed import PackedDataset
from cellblock.training.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    nonfinite,
    resolve_checkpoint,
)
from cellblock.training.setupconfig import SetupConfig

__all__ = [
    "RunInfo",
    "check_channels",
    "check_finite_weights",
    "class_ids",
    "inference_config",
    "load_run_info",
    "run_checkpoint",
]


def run_checkpoint(run: Path | str, iteration: int | None = None) -> Path:
    """The checkpoint file of a run: its latest, or that of ``iteration``.

    Args:
        run: A run folder (or a checkpoint file, when ``iteration`` is None).
        iteration: A checkpoint iteration of the run; None = the latest.

    Raises:
        UserError: No such run folder, no checkpoints, or none for ``iteration``
            (the message lists the iterations there are).
    """
    run = Path(run)
    if iteration is None:
        return resolve_checkpoint(run)
    path = checkpoint_path(run, iteration)
    if path.is_file():
        return path
    if not run.is_dir():
        raise UserError(f"--run {run}: no such run folder")
    have = sorted(int(p.stem.split("_")[-1]) for p in (run / "checkpoints").glob("checkpoint_*.pt"))
    listed = ", ".join(map(str, have)) if have else "none"
    raise UserError(f"{path}: no checkpoint of iteration {iteration} (iterations here: {listed})")


@dataclass(frozen=True)
class RunInfo:
    """What a checkpoint says about its network and data.

    Args:
        checkpoint: The checkpoint file.
        iteration: Its iteration.
        config: The resolved setup config it was trained with.
        embedding_dim: Width of the embeddings the network returns.
    """

    checkpoint: Path
    iteration: int
    config: SetupConfig
    embedding_dim: int


def inference_config(state: dict[str, Any], path: Path) -> SetupConfig:
    """A checkpoint's resolved config, ready to rebuild its network for prediction.

    Args:
        state: The loaded checkpoint.
        path: Its file (named in config errors).
    """
    cfg = SetupConfig.from_resolved(state["config"], where=str(path))
    # the checkpoint carries every weight: never fetch the pretrained initialization again
    return cfg._replace(net=dataclasses.replace(cfg.net, pretrained=None))


def _embedding_dim(cfg: SetupConfig) -> int:
    if cfg.net.embedding_dim:
        return cfg.net.embedding_dim
    with torch.device("meta"):  # pooled width only: no memory for the weights
        return build_net(cfg.net).embedding_dim


def load_run_info(checkpoint: Path | str) -> RunInfo:
    """Read a checkpoint's config and iteration (``weights_only`` load, CPU).

    Args:
        checkpoint: The checkpoint file.
    """
    path = Path(checkpoint)
    state = load_checkpoint(path)
    check_finite_weights(state, path)
    cfg = inference_config(state, path)
    return RunInfo(path, int(state["iteration"]), cfg, _embedding_dim(cfg))


def check_finite_weights(state: dict[str, Any], path: Path | str) -> None:
    """Refuse a checkpoint whose network weights hold NaN or infinity.

    Such a network predicts NaN everywhere: better named here, before any worker starts,
    than discovered as a store of holes.

    Raises:
        UserError: Naming the checkpoint, how many tensors are not finite and the first.
    """
    bad = nonfinite(state["model"])
    if bad:
        raise UserError(
            f"{path}: {len(bad)} of {len(state['model'])} weight tensors hold NaN or "
            f"infinity (first: {bad[0]}); it cannot predict: choose an earlier checkpoint "
            "(--iteration) or retrain"
        )


def check_channels(cfg: SetupConfig, packed: PackedDataset, where: str = "") -> list[int]:
    """0-based dataset channels the network reads, checked against ``net.in_channels``.

    Args:
        cfg: The run's config (``data.channels`` selects, ``net.in_channels`` expects).
        packed: The dataset to predict.
        where: How the run is named in errors (e.g. the checkpoint path).

    Raises:
        UserError: The dataset lacks a selected channel, or the selection's size is not
            the network's channel count.
    """
    names = packed.info.channels
    try:
        index = cfg.data.channel_index(len(names))
    except ConfigError as e:
        raise UserError(f"{where}: {e}; dataset {packed.path} has channels {list(names)}") from None
    if len(index) != cfg.net.in_channels:
        chosen = "all" if cfg.data.channels is None else list(cfg.data.channels)
        raise UserError(
            f"{where}: the network takes {cfg.net.in_channels} channels (net.in_channels) "
            f"but data.channels={chosen} selects {len(index)} of dataset {packed.path} "
            f"({len(names)} channels: {', '.join(names)})"
        )
    return index


def class_ids(cfg: SetupConfig, packed: PackedDataset) -> tuple[int, ...]:
    """The sirna id of each logit column (``label="control"``: the control sirnas)."""
    sirnas = class_sirnas(cfg.data.label, packed.metadata, cfg.net.num_classes)
    return tuple(int(c) for c in sirnas)
