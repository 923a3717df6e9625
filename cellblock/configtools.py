"""Building frozen config dataclasses from YAML mappings, with errors that name the key."""

from __future__ import annotations

import dataclasses
import difflib
from typing import TYPE_CHECKING, Any, TypeVar

from cellblock.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["config_from_dict"]

T = TypeVar("T", bound="DataclassInstance")


def config_from_dict(cls: type[T], d: dict[str, Any] | None, where: str, label: str) -> T:
    """``cls(**d)``, validated, for a config dataclass whose checks raise ConfigError.

    Args:
        cls: A dataclass; its ``__post_init__`` messages start with ``label``.
        d: Keys are field names; missing keys take their defaults; None = all defaults.
        where: How errors name the mapping, e.g. ``"config.yaml: net"``.
        label: The name the dataclass's own messages use (replaced by ``where``).

    Raises:
        ConfigError: Naming an unknown (e.g. misspelt) key with the closest known one,
            or a bad value.
    """
    d = {} if d is None else d
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in d:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
    try:
        return cls(**d)
    except ConfigError as e:
        raise ConfigError(str(e).replace(label, where, 1)) from None
