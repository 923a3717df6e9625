"""A setup's ``config.yaml``: sections ``net``, ``data``, ``train``, validated and resolved.

    net:   cellblock.nets.netconfig.NetConfig      (the network)
    data:  cellblock.data.config.DataConfig        (what is read and how)
    train: cellblock.training.config.TrainConfig   (the optimization loop)

None of them needs torch to be read, checked or written.

An unknown section or key is a ``ConfigError`` naming it and the file. ``--set
section.key=value`` (nested: ``data.augment.erase_p=0.5``) overrides a value; a bad one is
named as the ``--set`` it came from, not as the file. The file is read with
``cellblock.configtools.load_yaml`` (``lr: 3e-4`` is a number). The
resolved config is a plain dict of all three sections with every default filled in;
it travels with each checkpoint, and ``SetupConfig.from_resolved`` rebuilds the objects.

File paths (``net.pretrained``, ``data.pseudo_labels``) are made absolute on loading: a
relative path in config.yaml is relative to the project root (``runs/...`` means the
project's runs folder wherever the script runs from; the project is an argument, see
``cellblock.paths.Project``), one given with ``--set`` relative to the working
directory, as a shell user expects. ``s3://`` URLs stay as they are.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from cellblock.configtools import load_yaml
from cellblock.data.config import DataConfig
from cellblock.errors import ConfigError
from cellblock.nets.netconfig import NetConfig
from cellblock.paths import Project
from cellblock.training.config import TrainConfig

__all__ = ["SECTIONS", "SetupConfig", "apply_overrides", "load_setup_config", "resolve_config"]

SECTIONS = ("net", "data", "train")
PATH_KEYS = (("net", "pretrained"), ("data", "pseudo_labels"))


class SetupConfig(NamedTuple):
    """The three validated sections of a setup."""

    net: NetConfig
    data: DataConfig
    train: TrainConfig

    @classmethod
    def from_resolved(cls, resolved: dict[str, Any], where: str = "config") -> SetupConfig:
        """Objects from a (resolved or raw) config dict.

        Args:
            resolved: ``{"net": {...}, "data": {...}, "train": {...}}``; missing sections
                and keys take their defaults.
            where: How errors name the source, e.g. the file.
        """
        if not isinstance(resolved, dict):
            raise ConfigError(f"{where}: expected a mapping of sections {', '.join(SECTIONS)}")
        unknown = [k for k in resolved if k not in SECTIONS]
        if unknown:
            raise ConfigError(
                f"{where}: unknown section {unknown[0]!r} (sections: {', '.join(SECTIONS)})"
            )
        net = NetConfig.from_dict(resolved.get("net") or {}, where=f"{where}: net")
        try:
            data = DataConfig.from_dict(resolved.get("data") or {})
        except ConfigError as e:
            raise ConfigError(f"{where}: data: {e}") from None
        train = TrainConfig.from_dict(resolved.get("train"), where=f"{where}: train")
        return cls(net, data, train)

    def to_resolved(self) -> dict[str, Any]:
        """A plain dict (lists, not tuples) with every key: YAML/JSON/checkpoint-ready."""
        return {
            "net": _plain(self.net.to_dict()),
            "data": _plain(dataclasses.asdict(self.data)),
            "train": _plain(self.train.to_dict()),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def apply_overrides(
    raw: dict[str, Any], overrides: dict[str, object], where: str = "--set"
) -> dict[str, Any]:
    """A copy of ``raw`` with ``{"section.key": value}`` overrides applied.

    Args:
        raw: The config mapping (sections of mappings).
        overrides: From ``cellblock.cli.parse_overrides``; keys are dotted paths
            ``section.key`` or ``section.key.subkey``. Keys are checked when the result
            is resolved, so a misspelt one is a ``ConfigError`` naming it.
        where: How errors name the source of the overrides.
    """
    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if len(parts) < 2 or parts[0] not in SECTIONS:
            raise ConfigError(
                f"{where} {dotted}={value!r}: expected section.key with section one of "
                f"{', '.join(SECTIONS)}"
            )
        node = out
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"{where} {dotted}: {part!r} is not a mapping")
            node = node[part]
        node[parts[-1]] = value
    return out


def resolve_config(raw: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """Validate ``raw`` and return it with every default filled in (a plain dict)."""
    return SetupConfig.from_resolved(raw, where).to_resolved()


def load_setup_config(
    path: Path | str,
    overrides: dict[str, object] | None = None,
    project: Project | None = None,
    names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Read, override and resolve a setup's ``config.yaml``.

    Args:
        path: The ``config.yaml`` (or the setup folder holding it).
        overrides: ``{"section.key": value}``, e.g. from ``--set``.
        project: The project its relative paths are relative to; None =
            ``Project.locate(start=path)`` (the checkout holding the setup, ...).
        names: How errors name an override that is not a ``--set`` (``{"data.fold":
            "--fold"}``); others are ``--set KEY``.

    Raises:
        ConfigError: A missing or unreadable file, an unknown section or key, a bad
            value: named with the file, or as the override that made it bad.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections {', '.join(SECTIONS)}")
    project = project or Project.locate(start=path)
    raw = _absolute_paths(raw, project.root)
    overrides = dict(overrides or {})
    for section, key in PATH_KEYS:
        value = overrides.get(f"{section}.{key}")
        if isinstance(value, str) and value:
            overrides[f"{section}.{key}"] = _absolute(value, Path.cwd())
    try:
        return resolve_config(apply_overrides(raw, overrides), where=str(path))
    except ConfigError as error:
        raise _blame(raw, overrides, str(path), names or {}) or error from None


def _blame(
    raw: dict[str, Any], overrides: dict[str, object], where: str, names: dict[str, str]
) -> ConfigError | None:
    """The error to report when ``raw`` with ``overrides`` does not resolve.

    The file's own error if it is bad by itself (naming the file); else that of the first
    override which makes it bad, named as its option (``--set KEY``, or ``names[KEY]``): a
    command-line value is not the file's fault. None if neither alone explains it.
    """
    try:
        resolve_config(raw, where=where)
    except ConfigError as e:
        return e
    applied: dict[str, object] = {}
    for key, value in overrides.items():
        applied[key] = value
        try:
            resolve_config(apply_overrides(raw, applied), where=names.get(key, f"--set {key}"))
        except ConfigError as e:
            return e
    return None


def _absolute(value: str, base: Path) -> str:
    if value.startswith("s3://") or Path(value).expanduser().is_absolute():
        return str(Path(value).expanduser()) if not value.startswith("s3://") else value
    return str(base / value)


def _absolute_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for section, key in PATH_KEYS:
        node = out.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str) and node[key]:
            node[key] = _absolute(node[key], base)
    return out
