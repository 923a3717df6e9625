"""Plate geometry and RxRx1 naming.

A multi-well plate is a grid of wells named by a row letter and a 1-based,
zero-padded column number::

            col 01  02  03 ...  24
    row A     .   .   .  ...   .      <- outer ring: not used in RxRx1
    row B     .   #   #  ...   .
    ...           #   #               # = inner wells (rows B-O x cols 02-23
    row O     .   #   #  ...   .          on a 384-well plate: 308 wells)
    row P     .   .   .  ...   .

Rows past ``Z`` continue ``AA``, ``AB``, ... (1536-well plates have 32 rows).
Indices are 0-based everywhere in the code: well ``B02`` is ``(row=1, col=1)``.

RxRx1 names a well of a plate of an experiment by its ``id_code``
(``HEPG2-01_1_B02``), and stores one PNG per site and channel::

    Kaggle:  {train,test}/{EXPERIMENT}/Plate{p}/{WELL}_s{site}_w{channel}.png
    v1.0:    images/{EXPERIMENT}/Plate{p}/{WELL}_s{site}_w{channel}.png
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import PurePosixPath

__all__ = [
    "PLATE_FORMATS",
    "PlateFormat",
    "SiteFile",
    "cell_type_of",
    "id_code",
    "parse_id_code",
    "parse_plate_key",
    "parse_site_filename",
    "plate_key",
    "site_filename",
    "site_path",
]

# Standard SBS/ANSI plate formats: number of wells -> (rows, columns).
PLATE_FORMATS: dict[int, tuple[int, int]] = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}

_WELL_RE = re.compile(r"^([A-Z]{1,2})(\d{1,3})$")
_SITE_FILE_RE = re.compile(r"^([A-Z]{1,2}\d{1,3})_s(\d+)_w(\d+)\.png$")
_ID_CODE_RE = re.compile(r"^(.+)_(\d+)_([A-Z]{1,2}\d{1,3})$")


def _row_letters(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA, 31 -> AF."""
    letters = string.ascii_uppercase
    if index < 26:
        return letters[index]
    return letters[index // 26 - 1] + letters[index % 26]


def _row_index(letters: str) -> int:
    if len(letters) == 1:
        return ord(letters) - ord("A")
    return (ord(letters[0]) - ord("A") + 1) * 26 + ord(letters[1]) - ord("A")


@dataclass(frozen=True)
class PlateFormat:
    """Geometry of a multi-well plate.

    Args:
        n_rows: Number of well rows (8, 16 or 32 for 96/384/1536-well plates).
        n_cols: Number of well columns (12, 24 or 48).
    """

    n_rows: int
    n_cols: int

    def __post_init__(self) -> None:
        if not (1 <= self.n_rows <= 32 and 1 <= self.n_cols <= 99):
            raise ValueError(f"unsupported plate geometry {self.n_rows}x{self.n_cols}")

    @classmethod
    def from_n_wells(cls, n_wells: int) -> PlateFormat:
        """The standard format with ``n_wells`` wells (96, 384 or 1536)."""
        if n_wells not in PLATE_FORMATS:
            raise ValueError(
                f"unknown plate format {n_wells} wells; expected one of {sorted(PLATE_FORMATS)}"
            )
        return cls(*PLATE_FORMATS[n_wells])

    @classmethod
    def smallest_containing(cls, wells: list[str] | set[str]) -> PlateFormat:
        """The smallest standard format in which every well name is valid."""
        for n_wells in sorted(PLATE_FORMATS):
            fmt = cls.from_n_wells(n_wells)
            if all(fmt.contains(w) for w in wells):
                return fmt
        bad = sorted(w for w in wells if not cls.from_n_wells(1536).contains(w))
        raise ValueError(f"well(s) {bad[:5]} fit no plate format up to 1536 wells")

    @property
    def n_wells(self) -> int:
        return self.n_rows * self.n_cols

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.n_cols)

    def well_name(self, row: int, col: int) -> str:
        """``(1, 1)`` -> ``"B02"``."""
        if not (0 <= row < self.n_rows and 0 <= col < self.n_cols):
            raise ValueError(f"well index ({row}, {col}) outside a {self.n_wells}-well plate")
        return f"{_row_letters(row)}{col + 1:02d}"

    def well_index(self, well: str) -> tuple[int, int]:
        """``"B02"`` -> ``(1, 1)``; raises ValueError naming the well if it is not on the plate."""
        m = _WELL_RE.match(well)
        if m is None:
            raise ValueError(f"malformed well name {well!r} (expected e.g. 'B02')")
        row, col = _row_index(m.group(1)), int(m.group(2)) - 1
        if not (0 <= row < self.n_rows and 0 <= col < self.n_cols):
            raise ValueError(
                f"well {well!r} is outside a {self.n_wells}-well plate "
                f"(rows A-{_row_letters(self.n_rows - 1)}, columns 01-{self.n_cols:02d})"
            )
        return row, col

    def contains(self, well: str) -> bool:
        try:
            self.well_index(well)
        except ValueError:
            return False
        return True

    def wells(self) -> list[str]:
        """All well names, row-major (A01, A02, ..., B01, ...)."""
        return [self.well_name(r, c) for r in range(self.n_rows) for c in range(self.n_cols)]

    def inner_wells(self) -> list[str]:
        """Wells off the outer ring, row-major: RxRx1 uses only these (308 of 384)."""
        return [
            self.well_name(r, c)
            for r in range(1, self.n_rows - 1)
            for c in range(1, self.n_cols - 1)
        ]


def id_code(experiment: str, plate: int, well: str) -> str:
    """RxRx1 well identifier: ``id_code("HEPG2-01", 1, "B02") == "HEPG2-01_1_B02"``."""
    return f"{experiment}_{int(plate)}_{well}"


def parse_id_code(code: str) -> tuple[str, int, str]:
    """``"HEPG2-01_1_B02"`` -> ``("HEPG2-01", 1, "B02")``."""
    m = _ID_CODE_RE.match(code)
    if m is None:
        raise ValueError(f"malformed id_code {code!r} (expected e.g. 'HEPG2-01_1_B02')")
    return m.group(1), int(m.group(2)), m.group(3)


def plate_key(experiment: str, plate: int) -> str:
    """A plate's name in the stores and in ``--experiments``: ``"HEPG2-01/Plate1"``."""
    return f"{experiment}/Plate{int(plate)}"


def parse_plate_key(key: str) -> tuple[str, int]:
    """``"HEPG2-01/Plate1"`` -> ``("HEPG2-01", 1)``."""
    experiment, sep, plate = key.rpartition("/Plate")
    if not sep or not experiment or not plate.isdigit():
        raise ValueError(f"malformed plate key {key!r} (expected e.g. 'HEPG2-01/Plate1')")
    return experiment, int(plate)


def cell_type_of(experiment: str) -> str:
    """RxRx1 experiments are named ``{CELL_TYPE}-{NN}``: ``"HUVEC-07"`` -> ``"HUVEC"``."""
    cell_type, sep, number = experiment.rpartition("-")
    if not sep or not cell_type or not number.isdigit():
        raise ValueError(f"experiment {experiment!r} is not named CELLTYPE-NN (e.g. 'HEPG2-01')")
    return cell_type


def site_filename(well: str, site: int, channel: int) -> str:
    """``site_filename("B02", 1, 3) == "B02_s1_w3.png"`` (site and channel are 1-based)."""
    return f"{well}_s{site}_w{channel}.png"


@dataclass(frozen=True)
class SiteFile:
    """The parts of a site image file name ``{WELL}_s{site}_w{channel}.png``."""

    well: str
    site: int
    channel: int


def parse_site_filename(name: str) -> SiteFile | None:
    """Parse ``"B02_s1_w3.png"``; None if the name is not a site image name."""
    m = _SITE_FILE_RE.match(name)
    if m is None:
        return None
    return SiteFile(m.group(1), int(m.group(2)), int(m.group(3)))


def site_path(
    layout: str, split: str, experiment: str, plate: int, well: str, site: int, *, channel: int
) -> PurePosixPath:
    """Relative path of one channel image of one site in a raw RxRx1 tree.

    Args:
        layout: ``"kaggle"`` (``{split}/{EXP}/Plate{p}/...``) or ``"v1"``
            (``images/{EXP}/Plate{p}/...``).
        split: ``"train"`` or ``"test"`` (ignored by the v1 layout).
        experiment: Experiment name, e.g. ``"HEPG2-01"``.
        plate: Plate number, 1-based.
        well: Well name, e.g. ``"B02"``.
        site: Site number, 1-based.
        channel: Channel number, 1-based.
    """
    top = plate_dir(layout, split, experiment, plate)
    return top / site_filename(well, site, channel)


def plate_dir(layout: str, split: str, experiment: str, plate: int) -> PurePosixPath:
    """Relative folder of one plate's images in a raw RxRx1 tree (see :func:`site_path`)."""
    if layout == "kaggle":
        return PurePosixPath(split, experiment, f"Plate{int(plate)}")
    if layout == "v1":
        return PurePosixPath("images", experiment, f"Plate{int(plate)}")
    raise ValueError(f"unknown raw layout {layout!r}; expected 'kaggle' or 'v1'")
