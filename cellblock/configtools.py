"""Building frozen config dataclasses from YAML mappings, with errors that name the key.

``load_yaml`` reads config files and ``--set`` values: YAML as PyYAML reads it (1.1),
except that ``1e6`` and ``3e-4`` are numbers, as in YAML 1.2 and in Python. YAML 1.1
wants a dot and a signed exponent (``1.0e+6``), so PyYAML alone turns ``lr: 3e-4`` into
the string ``'3e-4'``, which a config check then refuses as "not a number".
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from cellblock.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["YamlLoader", "config_from_dict", "load_yaml"]

T = TypeVar("T", bound="DataclassInstance")


class YamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus YAML 1.2's floats with an exponent (``1e6``, ``3e-4``)."""


# Checked after YAML 1.1's own resolvers (ints, 1.1 floats, timestamps...), so it only
# claims what 1.1 would have left a string; the float constructor reads it as float().
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def load_yaml(text: str) -> Any:
    """``text`` read as YAML with :class:`YamlLoader` (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=YamlLoader)  # a SafeLoader: plain data only


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
