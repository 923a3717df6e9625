"""The two shapes of a command-line value that every script parses: lists and ``key=value``.

comma_list(" A, B,,C ", what="--experiments")           -> ["A", "B", "C"]
comma_list("1,2,3", what="--channels", type=int)         -> [1, 2, 3]
key_values(["time=1:00:00", "qos=low"], what="--cluster-option")
                                                         -> {"time": "1:00:00", "qos": "low"}
parse_overrides(["n_sites=1", "name=x"])                 -> {"n_sites": 1, "name": "x"}

Bad input is a ``UserError`` naming the option (``what``) and the text given. A caller
that uses one as an argparse ``type=`` turns it into ``argparse.ArgumentTypeError`` (argparse
reads any ``ValueError``, ``UserError`` included, as "invalid value" and drops its message).
Light (``errors``, ``configtools`` and yaml only), so workers and library modules use it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, overload

import yaml

from cellblock.configtools import load_yaml
from cellblock.errors import UserError

__all__ = ["comma_list", "key_value", "key_values", "parse_overrides"]

T = TypeVar("T")
_KINDS: dict[object, str] = {int: "an integer", float: "a number"}


@overload
def comma_list(text: str | None, *, what: str) -> list[str]: ...
@overload
def comma_list(text: str | None, *, what: str, type: Callable[[str], T]) -> list[T]: ...


def comma_list(text: str | None, *, what: str, type: Callable[[str], Any] = str) -> list[Any]:
    """The comma-separated items of ``text``: stripped, empty ones dropped, each ``type(item)``.

    Args:
        text: The option's value; None or blank gives ``[]``.
        what: The option, for the error (``"--experiments"``, an environment variable).
        type: Applied to each item (``int``, ``float``); a ValueError is bad input.

    Raises:
        UserError: Text with commas but no item (``","``), or an item ``type`` refuses.
    """
    items = [t for t in (t.strip() for t in (text or "").split(",")) if t]
    if not items and text and text.strip():
        raise UserError(f"{what} {text!r}: expected comma-separated values")
    out = []
    for item in items:
        try:
            out.append(type(item))
        except ValueError:
            kind = _KINDS.get(type, "valid")
            raise UserError(f"{what} {text!r}: {item!r} is not {kind}") from None
    return out


def key_value(text: str, *, what: str, bare: bool = False) -> tuple[str, str]:
    """``"KEY=VALUE"`` -> ``("KEY", "VALUE")``, both stripped (the value may hold ``=``).

    Args:
        text: One item.
        what: The option, for the error.
        bare: ``"KEY"`` alone is allowed too, as ``("KEY", "")``.

    Raises:
        UserError: No key, or (unless ``bare``) no ``=``.
    """
    key, sep, value = text.partition("=")
    if not key.strip() or not (sep or bare):
        raise UserError(f"{what} {text!r}: expected KEY=VALUE" + (" or KEY" if bare else ""))
    return key.strip(), value.strip()


def key_values(items: Iterable[str], *, what: str, bare: bool = False) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}`` (``key_value`` of each; a later key wins)."""
    return dict(key_value(item, what=what, bare=bare) for item in items)


def parse_overrides(items: Sequence[str]) -> dict[str, object]:
    """``["n_sites=1", "effect_size=0.5"]`` -> ``{"n_sites": 1, "effect_size": 0.5}``.

    Values are parsed as YAML scalars (numbers, booleans, null, strings), as config.yaml
    is read (``cellblock.configtools.load_yaml``: ``1e6`` and ``3e-4`` are numbers).

    Args:
        items: ``key=value`` strings, as given to ``--set``.

    Raises:
        UserError: An item without ``=`` or without a key.
    """
    pairs = key_values(items, what="--set")
    out: dict[str, object] = {}
    for key, value in pairs.items():
        try:
            out[key] = load_yaml(value) if value else None
        except yaml.YAMLError as e:  # `--set name=[1,2` or `key=: x`
            first = str(e).splitlines()[0]
            raise UserError(f"--set {key}={value}: not a YAML value ({first})") from None
    return out
