"""Named datasets (``01_data/datasets.json``) and selecting experiments within them.

The catalog files are a project's (``cellblock.paths.Project.catalog`` and
``.checkpoints``): the commands pass their paths in.

An entry is either an S3 location::

    "demo": {"kind": "s3", "bucket": "cellblock-public", "prefix": "demo/raw/",
             "endpoint_url": null, "anonymous": true, "layout": "kaggle", "license": "..."}

(``endpoint_url: null`` means ``AWS_ENDPOINT_URL`` or AWS), or HTTPS archives::

    "rxrx1": {"kind": "https", "files": [{"url": "https://.../rxrx1-metadata.zip",
              "extract": true, "strip": 1}, ...], "layout": "v1", "license": "..."}
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import TypeVar

from cellblock.errors import ConfigError, UserError
from cellblock.remote.storage import Remote, RemoteObject, relative_key

__all__ = [
    "load_catalog",
    "no_match_error",
    "remote_of",
    "select_by_path",
    "select_experiments",
]

T = TypeVar("T")
_KEYS = {"kind", "bucket", "prefix", "endpoint_url", "anonymous", "layout", "license", "files",
         "description", "region"}  # fmt: skip


def load_catalog(path: Path) -> dict[str, dict]:
    """The named datasets; an unknown key in an entry is an error naming it.

    Args:
        path: The catalog, e.g. ``Project.catalog`` (``01_data/datasets.json``).
    """
    try:
        catalog = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read the dataset catalog ({e})") from None
    for name, entry in catalog.items():
        unknown = sorted(set(entry) - _KEYS)
        if unknown:
            raise ConfigError(f"{path}: dataset {name!r} has unknown key(s) {unknown}")
        if entry.get("kind") not in ("s3", "https"):
            raise ConfigError(f"{path}: dataset {name!r} needs kind 's3' or 'https'")
    return catalog


def entry_of(name: str, path: Path) -> dict:
    """The catalog entry ``name``.

    Args:
        name: A dataset name (``--dataset``).
        path: The catalog (see :func:`load_catalog`).
    """
    catalog = load_catalog(path)
    if name not in catalog:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(sorted(catalog))}")
    return catalog[name]


def remote_of(entry: dict) -> Remote:
    """The S3 location of a catalog entry of kind ``s3``."""
    return Remote(
        bucket=entry["bucket"],
        prefix=entry.get("prefix", ""),
        endpoint_url=entry.get("endpoint_url"),
        anonymous=bool(entry.get("anonymous", False)),
        region=entry.get("region"),
    )


def select_by_path(
    items: Sequence[T], path_of: Callable[[T], str], wanted: Sequence[str] | None
) -> tuple[list[T], list[str]]:
    """The items of the ``wanted`` experiments, and the wanted entries that matched nothing.

    The one selection rule for S3 objects and zip members alike: a top-level file
    (tables, manifest) is always kept; a deeper one is kept when a folder of its path is
    the experiment (``"HEPG2-01"``) and, if a plate is named (``"HEPG2-01/Plate2"``),
    another folder is that plate.

    Args:
        items: Anything with a relative path (objects, zip members).
        path_of: The item's ``/``-separated path relative to the dataset root.
        wanted: Experiments or ``EXP/PlateN`` entries; None or empty keeps everything.
    """
    if not wanted:
        return list(items), []
    keep, hits = [], dict.fromkeys(wanted, 0)
    for item in items:
        folders = PurePosixPath(path_of(item)).parts[:-1]
        chosen = not folders
        for entry in wanted:
            exp, _, plate = entry.partition("/")
            if exp in folders and (not plate or plate in folders):
                hits[entry] += 1
                chosen = True
        if chosen:
            keep.append(item)
    return keep, [w for w, n in hits.items() if n == 0]


def no_match_error(missing: Sequence[str], paths: Iterable[str]) -> UserError:
    """The error for ``wanted`` entries that matched nothing, listing what exists.

    Args:
        missing: The entries that matched nothing.
        paths: Every relative path that was looked at (experiments are the
            third-from-last component: ``images/EXP/PlateN/file``).
    """
    parts = [PurePosixPath(p).parts for p in paths]
    present = sorted({s[-3] for s in parts if len(s) >= 3})
    return UserError(f"no objects for {list(missing)}; experiments present: {present}")


def select_experiments(
    objects: list[RemoteObject], prefix: str, wanted: list[str] | None
) -> list[RemoteObject]:
    """Objects of the ``wanted`` experiments (``"HEPG2-01"`` or ``"HEPG2-01/Plate2"``).

    Top-level files (tables, manifest) are always kept; images are kept when their
    path holds the experiment folder (and the plate folder, if one is named). An entry
    that matches nothing is an error listing the experiments that exist.
    """
    keep, missing = select_by_path(objects, lambda o: relative_key(o.key, prefix), wanted)
    if missing:
        raise no_match_error(missing, (relative_key(o.key, prefix) for o in objects))
    return keep


_ITERATION = re.compile(r"(\d+)\.(pt|pth|safetensors|ckpt)$")


def checkpoint_entry(setup: str, path: Path) -> dict:
    """Registry entry of a setup (``02_train/rxrx1/densenet121`` or ``rxrx1/densenet121``).

    Args:
        setup: The setup (its last two path parts name it).
        path: The registry, e.g. ``Project.checkpoints`` (``01_data/checkpoints.json``).
    """
    parts = PurePosixPath(setup.rstrip("/")).parts
    name = "/".join(parts[-2:])
    try:
        registry = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read the checkpoint registry ({e})") from None
    if name not in registry:
        raise UserError(
            f"no published checkpoints for {name!r} in {path}; known: {sorted(registry)}"
        )
    entry = registry[name]
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ConfigError(f"{path}: entry {name!r} has unknown key(s) {unknown}")
    return {"kind": "s3", **entry}


def select_checkpoint(
    objects: list[RemoteObject], prefix: str, iteration: int | None
) -> tuple[int, list[RemoteObject]]:
    """The checkpoint files of ``iteration`` (default: the latest) plus every non-checkpoint file.

    Checkpoints are files whose name ends in ``<iteration>.pt`` (or .pth, .safetensors,
    .ckpt), e.g. ``checkpoints/model_5000.pt``; configs, logs and the manifest come along.
    """
    found: dict[int, list[RemoteObject]] = {}
    others = []
    for obj in objects:
        m = _ITERATION.search(PurePosixPath(relative_key(obj.key, prefix)).name)
        if m:
            found.setdefault(int(m.group(1)), []).append(obj)
        else:
            others.append(obj)
    if not found:
        raise UserError(f"no checkpoint files (*<iteration>.pt) under prefix {prefix!r}")
    if iteration is None:
        iteration = max(found)
    if iteration not in found:
        raise UserError(f"no checkpoint of iteration {iteration}; published: {sorted(found)}")
    return iteration, others + found[iteration]
