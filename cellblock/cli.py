"""Plumbing shared by the stage scripts: logging, ``--set key=value``, clean errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

import yaml

from cellblock.errors import ConfigError, UserError

__all__ = ["parse_overrides", "run"]

log = logging.getLogger("cellblock")


def parse_overrides(items: Sequence[str]) -> dict[str, object]:
    """``["n_sites=1", "effect_size=0.5"]`` -> ``{"n_sites": 1, "effect_size": 0.5}``.

    Values are parsed as YAML scalars (numbers, booleans, null, strings).
    """
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


def run(main: Callable[[], int | None]) -> None:
    """Run a script's ``main``: INFO logging, and a one-line error for bad input."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for chatty in ("botocore", "boto3", "s3transfer", "urllib3"):  # their INFO is noise here
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        code = main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
