"""The two axes of a training grid, as the command line gives them: folds and channel sets.

parse_folds("0-4")                      -> [0, 1, 2, 3, 4]
parse_channel_sets("leave-one-out", 6)  -> [(2, 3, 4, 5, 6), (1, 3, 4, 5, 6), ...]
channels_name((1, 2, 3))                -> "ch1-2-3"   (the run's folder)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cellblock.cli.values import comma_list
from cellblock.errors import UserError

__all__ = ["GridRun", "channels_name", "parse_channel_sets", "parse_folds"]


def parse_folds(text: str) -> list[int]:
    """``"0-4"`` -> ``[0, 1, 2, 3, 4]``; ``"0,2"`` -> ``[0, 2]``; ``"3"`` -> ``[3]``.

    Raises:
        UserError: Another format, or a repeated fold.
    """
    folds: list[int] = []
    for part in comma_list(str(text), what="--folds") or [str(text)]:
        m = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", part)
        if not m:
            raise UserError(f"--folds {text!r}: expected e.g. 0-4 or 0,2,4")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise UserError(f"--folds {text!r}: range {lo}-{hi} is empty")
        folds.extend(range(lo, hi + 1))
    if len(set(folds)) != len(folds):
        raise UserError(f"--folds {text!r}: a fold is repeated")
    return folds


def parse_channel_sets(text: str, n_channels: int) -> list[tuple[int, ...]]:
    """Channel subsets (1-based) from ``all``, ``leave-one-out`` or ``"1,2,3;4,5,6"``.

    Args:
        text: ``all`` (one set of every channel), ``leave-one-out`` (``n_channels`` sets,
            each without one channel), or sets separated by ``;``.
        n_channels: Channels of the dataset.

    Raises:
        UserError: An unknown channel, an empty or repeated set, a repeated channel.
    """
    text = str(text).strip()
    every = tuple(range(1, n_channels + 1))
    if text == "all":
        return [every]
    if text == "leave-one-out":
        return [tuple(c for c in every if c != left) for left in every]
    sets: list[tuple[int, ...]] = []
    for part in text.split(";"):
        try:
            chans = tuple(comma_list(part, what="--channel-sets", type=int))
        except UserError:
            raise UserError(f"--channel-sets {text!r}: expected all, leave-one-out or e.g. "
                            "'1,2,3;4,5,6'") from None  # fmt: skip
        bad = [c for c in chans if not 1 <= c <= n_channels]
        if not chans or bad or len(set(chans)) != len(chans):
            what = f"channel {bad[0]} not in 1..{n_channels}" if bad else "empty or repeated"
            raise UserError(f"--channel-sets {text!r}: set {part.strip()!r}: {what}")
        sets.append(chans)
    if len(set(sets)) != len(sets):
        raise UserError(f"--channel-sets {text!r}: a set is repeated")
    return sets


def channels_name(channels: tuple[int, ...]) -> str:
    """``(1, 2, 3)`` -> ``ch1-2-3`` (as ``train.py --channels`` names its run folder)."""
    return "ch" + "-".join(map(str, channels))


@dataclass(frozen=True)
class GridRun:
    """One run of the grid.

    Attributes:
        index: Position in the grid (the array task index of a full submission).
        channels: 1-based channel subset.
        fold: Validation fold.
        run_dir: Its run folder.
    """

    index: int
    channels: tuple[int, ...]
    fold: int
    run_dir: Path
