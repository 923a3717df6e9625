"""The files of a service's state folder: JSON records read leniently, files written atomically.

A reader (``status``, a later start) sees a whole file or none; one that is missing,
unreadable or not a JSON object reads as None, as if no service had written it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cellblock.atomic import atomic_path

__all__ = ["read_json", "write_atomic"]


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None if it is missing or unreadable.

    Args:
        path: The file.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_atomic(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file beside it, then a rename).

    Args:
        path: The file.
        text: Its new content.
        mode: Its permission bits (given before the content is written: a file that
            will hold secrets is never readable by others); None: as ``open`` makes them.
    """
    with atomic_path(path) as tmp:
        if mode is not None:
            os.chmod(tmp, mode)
        tmp.write_text(text)
