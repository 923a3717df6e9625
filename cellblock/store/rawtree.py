"""Reading and checking a raw RxRx1 PNG tree (one 8-bit PNG per site and channel).

Every problem is a ``RawImageError`` whose message names the file: a missing or
extra channel, a wrong image size, a non-8-bit image, a corrupt or truncated PNG,
or a file for a well that is not on the plate. Images of sites the metadata does not
list are ignored with a warning naming their wells, or refused (``strict``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cellblock.errors import UserError
from cellblock.screen.plates import PlateFormat, parse_site_filename, site_filename

__all__ = ["RawGeometry", "RawImageError", "check_plate_folder", "probe_geometry", "read_png"]

log = logging.getLogger(__name__)


class RawImageError(UserError):
    """A raw image file is missing, unexpected or unreadable; the message names it."""


@dataclass(frozen=True)
class RawGeometry:
    """What every site of a raw tree must look like.

    Args:
        n_channels: Channels per site (files ``_w1`` .. ``_wN``).
        height: Image height in pixels.
        width: Image width in pixels.
    """

    n_channels: int
    height: int
    width: int


def read_png(path: Path, height: int | None = None, width: int | None = None) -> np.ndarray:
    """Decode one 8-bit grayscale PNG, checking its mode and (if given) its size."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode != "L":
                raise RawImageError(
                    f"{path}: image mode {img.mode!r}, expected 8-bit grayscale ('L')"
                )
            array = np.asarray(img)
    except FileNotFoundError:
        raise RawImageError(f"{path}: file not found (missing channel image?)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, RawImageError):
            raise
        raise RawImageError(f"{path}: corrupt or truncated PNG ({e})") from None
    if height is not None and array.shape != (height, width):
        raise RawImageError(
            f"{path}: image size {array.shape[1]}x{array.shape[0]}, expected {width}x{height}"
        )
    return array


def probe_geometry(plate_folder: Path, well: str, site: int) -> RawGeometry:
    """Channels and image size from the files of one site (the first site of a tree)."""
    channels = sorted(
        f.channel
        for p in Path(plate_folder).glob(f"{well}_s{site}_w*.png")
        if (f := parse_site_filename(p.name)) is not None
    )
    if not channels:
        raise RawImageError(f"{plate_folder}: no images for well {well} site {site}")
    if channels != list(range(1, len(channels) + 1)):
        raise RawImageError(
            f"{plate_folder}: well {well} site {site} has channels {channels}, "
            f"expected w1..w{max(channels)} without gaps"
        )
    first = read_png(Path(plate_folder) / site_filename(well, site, 1))
    return RawGeometry(len(channels), *first.shape)


# Unlisted wells named in a message before "and N more".
_NAMED = 10


def check_plate_folder(
    folder: Path,
    fmt: PlateFormat,
    geometry: RawGeometry,
    expected: set[tuple[str, int]],
    strict: bool = False,
) -> None:
    """Check the file names of one plate folder against the site table.

    Args:
        folder: The plate's folder of PNGs.
        fmt: The plate format; a file for a well off the plate is an error.
        geometry: Expected channels (a ``_w7`` when there are 6 is an error).
        expected: ``(well, site)`` pairs the site table lists for this plate.
        strict: Images of sites the table does not list are an error (else a warning
            naming their wells; they are not packed either way).
    """
    if not Path(folder).is_dir():
        raise RawImageError(
            f"{folder}: plate folder not found (if you fetched a subset, pack it with "
            "--experiments)"
        )
    unlisted: dict[tuple[str, int], int] = {}
    seen = set()
    for path in sorted(Path(folder).iterdir()):
        parsed = parse_site_filename(path.name)
        if parsed is None:
            continue  # not an image of ours (thumbs, notes): ignore
        if not fmt.contains(parsed.well):
            try:
                fmt.well_index(parsed.well)
            except ValueError as e:
                raise RawImageError(f"{path}: {e}") from None
        if not 1 <= parsed.channel <= geometry.n_channels:
            raise RawImageError(
                f"{path}: unexpected channel w{parsed.channel} "
                f"(this dataset has w1..w{geometry.n_channels})"
            )
        if (parsed.well, parsed.site) not in expected:
            key = (parsed.well, parsed.site)
            unlisted[key] = unlisted.get(key, 0) + 1
        seen.add(path.name)
    wanted = [
        site_filename(well, site, ch)
        for well, site in sorted(expected)
        for ch in range(1, geometry.n_channels + 1)
    ]
    missing = [name for name in wanted if name not in seen]
    if missing:
        raise RawImageError(
            f"{Path(folder) / missing[0]}: file not found (missing channel image; "
            f"{len(missing)} file(s) missing in this plate)"
        )
    if unlisted:
        _unlisted(Path(folder), unlisted, {well for well, _ in expected}, strict)


def _unlisted(
    folder: Path, images: dict[tuple[str, int], int], listed: set[str], strict: bool
) -> None:
    """Name the sites no metadata row lists: an error if ``strict``, else a warning.

    A well the table has no row for is named alone (``B02``), a site of a listed well
    with its site (``B02 site 3``); past ``_NAMED`` of them, "and N more".
    """
    names = sorted({well if well not in listed else f"{well} site {site}" for well, site in images})
    shown = ", ".join(names[:_NAMED]) + (
        f" and {len(names) - _NAMED} more" if len(names) > _NAMED else ""
    )
    what = (
        f"{folder}: {sum(images.values())} image(s) of {len(images)} site(s) not in the "
        f"metadata (no row for {shown})"
    )
    if strict:
        raise RawImageError(f"{what}; add their rows, or pack without --strict to skip them")
    log.warning("%s were ignored (--strict makes this an error)", what)
