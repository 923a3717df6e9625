"""File integrity: S3 ETags (single and multipart), the publisher's checksum manifest,
and ``.sha256`` sidecar files beside files whose format has no checksum of its own.

An S3 ETag is the MD5 of the object for a single-part upload, and for a multipart
upload ``md5(md5(part1) + md5(part2) + ...)-N``, which depends on the part size the
uploader chose. So ``cellblock`` publishers also write ``manifest.json`` beside the
objects (``{"files": {relative key: {"size": n, "sha256": hex}}}``); a fetch checks
a file against the manifest when there is one, else against the ETag.

A sidecar ``NAME.sha256`` holds ``<hex>  NAME`` (the ``sha256sum`` format, so
``sha256sum -c checkpoint_00001000.pt.sha256`` checks it by hand). torch checkpoints
need one: ``torch.load`` reads a zip whose record checksums it never verifies, so a
flipped bit in a weight loads silently.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cellblock.atomic import atomic_write_text
from cellblock.errors import UserError

__all__ = [
    "MANIFEST_NAME",
    "Manifest",
    "etag_matches",
    "file_digest",
    "sidecar_matches",
    "sidecar_path",
    "write_sidecar",
]

MANIFEST_NAME = "manifest.json"
_MiB = 1024 * 1024
_BLOCK = 4 * _MiB


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 4 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def _multipart_etag(path: Path, part_size: int) -> str:
    digests, n = b"", 0
    with open(path, "rb") as f:
        while part := f.read(part_size):
            digests += hashlib.md5(part).digest()
            n += 1
    return f"{hashlib.md5(digests).hexdigest()}-{n}"


def _part_size_candidates(size: int, n_parts: int) -> Iterable[int]:
    """Part sizes an uploader may have used: common defaults, then size / N rounded up to MiB."""
    yield from (8 * _MiB, 16 * _MiB, 5 * _MiB, 64 * _MiB)
    per_part = -(-size // n_parts)
    yield -(-per_part // _MiB) * _MiB


def etag_matches(path: Path, etag: str) -> bool:
    """Whether the local file has the S3 ``etag`` (quotes allowed)."""
    etag = etag.strip('"')
    if "-" not in etag:
        return file_digest(path, "md5") == etag
    n_parts = int(etag.rsplit("-", 1)[1])
    size = Path(path).stat().st_size
    for part_size in _part_size_candidates(size, n_parts):
        if -(-size // part_size) == n_parts and _multipart_etag(path, part_size) == etag:
            return True
    return False


@dataclass(frozen=True)
class Manifest:
    """Sizes and SHA-256 digests of published files, keyed by path relative to the prefix."""

    files: dict[str, dict]

    @classmethod
    def for_folder(cls, folder: Path, names: Iterable[str]) -> Manifest:
        folder = Path(folder)
        return cls(
            {
                name: {"size": (folder / name).stat().st_size, "sha256": file_digest(folder / name)}
                for name in sorted(names)
            }
        )

    def to_json(self) -> str:
        return json.dumps({"version": 1, "files": self.files}, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            obj = json.loads(text)
            files = obj["files"]
            for name, entry in files.items():
                if not isinstance(entry.get("size"), int) or len(entry.get("sha256", "")) != 64:
                    raise ValueError(f"bad entry for {name!r}")
        except (ValueError, KeyError, AttributeError, TypeError) as e:
            raise UserError(f"{where}: malformed checksum manifest ({e})") from None
        return cls(files)

    def matches(self, name: str, path: Path) -> bool | None:
        """Whether ``path`` matches the manifest entry ``name``; None if there is no entry."""
        entry = self.files.get(name)
        if entry is None:
            return None
        path = Path(path)
        return path.stat().st_size == entry["size"] and file_digest(path) == entry["sha256"]


def sidecar_path(path: Path | str) -> Path:
    """``NAME.sha256`` beside ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_sidecar(path: Path | str, data: bytes | memoryview) -> Path:
    """Write ``NAME.sha256`` for ``path``, whose content is ``data`` (atomic)."""
    path = Path(path)
    target = sidecar_path(path)
    atomic_write_text(target, f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
    return target


def sidecar_matches(path: Path | str, data: bytes) -> bool | None:
    """Whether ``data`` (the content of ``path``) matches its sidecar; None if there is none.

    A sidecar that cannot be parsed counts as a mismatch.
    """
    try:
        text = sidecar_path(path).read_text()
    except FileNotFoundError:
        return None
    return text.split(maxsplit=1)[:1] == [hashlib.sha256(data).hexdigest()]
