"""Zip extraction that is safe, selective and resumable, from a local or a remote zip.

    check every member name (like S3 keys: nothing lands outside ``out``) -> strip
    leading folders -> keep the wanted experiments -> skip members already present
    with the right size and CRC32 -> extract the rest in archive order, each to a
    temporary name, renamed once zipfile has checked its CRC

A remote zip is a file over HTTP Range requests (``cellblock.remote.httpfetch.HttpRangeFile``);
when it offers ``read_ahead(end)``, each run of adjacent wanted members is fetched
with one request instead of one per member.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path, PurePosixPath

from cellblock.progress import ProgressBar, progress_bar
from cellblock.remote.catalog import no_match_error, select_by_path
from cellblock.remote.storage import StorageError, UnsafeKeyError, local_path

__all__ = [
    "extract_members",
    "extract_zip",
    "extract_zips",
    "intact_members",
    "member_intact",
    "open_zip",
    "plan_members",
]

log = logging.getLogger(__name__)
_BLOCK = 1 << 20
_BUFFER = 64 << 10  # buffer over a raw remote file: a zip header read is one small request
_GAP = 64 << 10  # unwanted bytes worth reading through rather than paying another request

Plan = list[tuple[zipfile.ZipInfo, Path]]


@contextmanager
def open_zip(source) -> Iterator[tuple[zipfile.ZipFile, str, object]]:
    """Open a zip for reading: ``(zip, a name for messages, read-ahead hook or None)``.

    Args:
        source: A path, a seekable binary file, or a raw file such as
            ``HttpRangeFile`` (buffered here, and left open afterwards).
    """
    raw = getattr(source, "raw", source)
    name = str(getattr(raw, "url", "") or getattr(source, "name", "") or "zip")
    if isinstance(source, str | os.PathLike):
        name = str(source)
    fp = io.BufferedReader(source, _BUFFER) if isinstance(source, io.RawIOBase) else source
    try:
        try:
            zf = zipfile.ZipFile(fp)
        except (zipfile.BadZipFile, OSError) as e:
            raise StorageError(f"{name}: not a readable zip archive ({e})") from None
        with zf:
            yield zf, name, getattr(raw, "read_ahead", None)
    finally:
        if fp is not source:
            fp.detach()  # leave the caller's raw file open


def plan_members(
    zf: zipfile.ZipFile, out: Path, strip: int, wanted: Sequence[str] | None, name: str
) -> tuple[Plan, list[str], list[str]]:
    """Which members go where: ``(plan, wanted entries matching nothing, all paths)``.

    Every member name is checked first, so one unsafe name stops the whole archive
    before anything is written.

    Args:
        zf: The open archive.
        out: Destination folder.
        strip: Leading path components to drop; shallower members are left out.
        wanted: Experiment or ``EXP/PlateN`` entries (None: all), by
            :func:`cellblock.remote.catalog.select_by_path` on the stripped paths.
        name: The archive's name, for messages.
    """
    members = []
    for info in zf.infolist():
        try:
            local_path(out, info.filename.removesuffix("/") if info.is_dir() else info.filename)
        except UnsafeKeyError:
            raise UnsafeKeyError(
                f"{name}: refusing zip member {info.filename!r}: it would be written outside {out}"
            ) from None
        parts = info.filename.split("/")
        if not info.is_dir() and len(parts) > strip:  # folders are made as files need them
            members.append((info, "/".join(parts[strip:])))
    keep, missing = select_by_path(members, lambda m: m[1], wanted)
    return [(info, local_path(out, rel)) for info, rel in keep], missing, [r for _, r in members]


def member_intact(target: Path, info: zipfile.ZipInfo) -> bool:
    """Whether ``target`` already holds ``info``'s bytes (size, then CRC32)."""
    if not target.is_file() or target.stat().st_size != info.file_size:
        return False
    crc = 0
    with open(target, "rb") as f:
        while block := f.read(_BLOCK):
            crc = zlib.crc32(block, crc)
    return crc == info.CRC


def _run_ends(zf: zipfile.ZipFile, todo: list[zipfile.ZipInfo]) -> list[int]:
    """For members in archive order: where the run of wanted members each opens ends."""
    # A member's bytes end at the next member's header, or at the central directory.
    starts = sorted({i.header_offset for i in zf.infolist()} | {zf.start_dir})
    ends = dict(itertools.pairwise(starts))
    out, run_end = [0] * len(todo), 0
    for k in reversed(range(len(todo))):
        end = ends[todo[k].header_offset]
        joined = k + 1 < len(todo) and todo[k + 1].header_offset - end <= _GAP
        run_end = out[k] = run_end if joined else end
    return out


def extract_members(
    zf: zipfile.ZipFile, plan: Plan, name: str, read_ahead=None, progress: bool = True
) -> dict:
    """Extract ``plan`` (from :func:`plan_members`), skipping members already intact.

    Args:
        zf: The open archive.
        plan: ``(member, target)`` pairs.
        name: The archive's name, for messages.
        read_ahead: ``open_zip``'s hook: told how far each run of wanted members reaches.
        progress: Show a progress bar of bytes.

    Returns:
        ``{"extracted": n, "skipped": n, "bytes": n}`` (uncompressed bytes extracted).
    """
    todo = sorted(((i, t) for i, t in plan if not member_intact(t, i)),
                  key=lambda m: m[0].header_offset)  # fmt: skip
    skipped = len(plan) - len(todo)
    if skipped:
        log.info("%s: %d of %d member(s) already present and intact", name, skipped, len(plan))
    total = sum(info.file_size for info, _ in todo)
    ends = _run_ends(zf, [info for info, _ in todo])
    with progress_bar(total=total, unit="B", unit_scale=True, desc=PurePosixPath(name).name,
              disable=not progress) as bar:  # fmt: skip
        for (info, target), end in zip(todo, ends, strict=True):
            if read_ahead is not None:
                read_ahead(end)
            _write_member(zf, info, target, name, bar)
    if read_ahead is not None:
        read_ahead(0)  # the announced spans are done
    return {"extracted": len(todo), "skipped": skipped, "bytes": total}


def _write_member(zf: zipfile.ZipFile, info, target: Path, name: str, bar: ProgressBar) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    try:
        with zf.open(info) as src, open(tmp, "wb") as dst:  # zipfile checks the CRC at EOF
            while block := src.read(_BLOCK):
                dst.write(block)
                bar.update(len(block))
        os.replace(tmp, target)
    except (zipfile.BadZipFile, NotImplementedError) as e:
        raise StorageError(f"{name}: member {info.filename!r} cannot be extracted ({e})") from None
    finally:
        tmp.unlink(missing_ok=True)


def extract_zip(
    source, out: Path, strip: int = 0, wanted: Sequence[str] | None = None, progress: bool = True
) -> dict:
    """Extract the members of a zip into ``out``; resumable, all-or-nothing per member.

    Args:
        source: A local zip path, a ``cellblock.remote.httpfetch.HttpRangeFile`` (or
            ``open_url``'s reader) for a remote zip, or any seekable binary file.
        out: Destination folder.
        strip: Leading path components to drop (RxRx1's zips hold ``rxrx1/...``: 1).
        wanted: Only these experiments (``"HEPG2-01"``) or plates (``"HEPG2-01/Plate2"``);
            top-level files are always extracted. None: everything.
        progress: Show a progress bar of bytes.

    Returns:
        ``{"extracted": n, "skipped": n, "bytes": n}``; skipped members were already
        present with the right size and CRC32.

    Raises:
        UnsafeKeyError: A member name would land outside ``out`` (``..``, absolute,
            backslash), raised before anything is written.
        UserError: A wanted entry matches no member.
    """
    return extract_zips([(source, strip)], out, wanted, progress)


def extract_zips(
    sources: Sequence[tuple[object, int]],
    out: Path,
    wanted: Sequence[str] | None = None,
    progress: bool = True,
) -> dict:
    """:func:`extract_zip` over several archives, every one planned before any is extracted.

    Args:
        sources: ``(source, strip)`` pairs, as for :func:`extract_zip`.
        out: Destination folder.
        wanted: As for :func:`extract_zip`; an entry need only match in one archive
            (RxRx1's metadata zip holds no images).
        progress: Show progress bars.

    Returns:
        The summed ``{"extracted": n, "skipped": n, "bytes": n}``.
    """
    out, total = Path(out), {"extracted": 0, "skipped": 0, "bytes": 0}
    with ExitStack() as stack:
        opened, missing = [], list(wanted or [])
        paths: list[str] = []
        for source, strip in sources:
            zf, name, read_ahead = stack.enter_context(open_zip(source))
            plan, miss, rels = plan_members(zf, out, strip, wanted, name)
            opened.append((zf, plan, name, read_ahead))
            missing, paths = [w for w in missing if w in miss], paths + rels
        if missing:
            raise no_match_error(missing, paths)
        for zf, plan, name, read_ahead in opened:
            for key, n in extract_members(zf, plan, name, read_ahead, progress).items():
                total[key] += n
    return total


def intact_members(source, out: Path, strip: int = 0) -> int | None:
    """How many members a zip has, if every one is already extracted intact under ``out``.

    Args:
        source: As for :func:`extract_zip`; a remote zip costs its central directory.
        out: Destination folder.
        strip: As for :func:`extract_zip`.

    Returns:
        The member count, or None as soon as one member is missing or damaged.
    """
    with open_zip(source) as (zf, name, _):
        plan = plan_members(zf, Path(out), strip, None, name)[0]
        return len(plan) if all(member_intact(t, info) for info, t in plan) else None
