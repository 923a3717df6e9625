"""RxRx1 tables: load, validate and merge them into one site-level table.

The site table has one row per imaged site and these columns (``SITE_COLUMNS``):

    id_code     ``HEPG2-01_1_B02``           experiment  ``HEPG2-01``
    plate       1-based plate number          well        ``B02``
    row, col    0-based well indices          site        1-based site number
    cell_type   ``HEPG2``                     split       ``train`` / ``test``
    well_type   ``treatment`` / ``positive_control`` / ``negative_control``
    sirna       label id (nullable: unknown for test treatments)

Two source layouts are supported:

* Kaggle: ``train.csv``, ``test.csv``, ``train_controls.csv``, ``test_controls.csv``
  (one row per well) plus, optionally, ``test_labels.csv`` (``id_code,sirna``: the
  answer key, which the synthetic generator writes and RxRx1 published after the
  competition).
* RxRx1 v1.0: one ``metadata.csv`` with one row per site.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cellblock.errors import UserError
from cellblock.screen.plates import PlateFormat, cell_type_of, id_code

__all__ = [
    "SITE_COLUMNS",
    "WELL_TYPES",
    "MetadataError",
    "detect_layout",
    "load_kaggle",
    "load_pixel_stats",
    "load_raw_metadata",
    "load_v1",
    "plate_groups",
    "validate_site_table",
]

log = logging.getLogger(__name__)

SITE_COLUMNS = [
    "id_code", "experiment", "plate", "well", "row", "col", "site", "cell_type", "split",
    "well_type", "sirna",
]  # fmt: skip
WELL_TYPES = ("treatment", "positive_control", "negative_control")

KAGGLE_COLUMNS = {
    "train.csv": ["id_code", "experiment", "plate", "well", "sirna"],
    "test.csv": ["id_code", "experiment", "plate", "well"],
    "train_controls.csv": ["id_code", "experiment", "plate", "well", "sirna", "well_type"],
    "test_controls.csv": ["id_code", "experiment", "plate", "well", "sirna", "well_type"],
}
PIXEL_STATS_COLUMNS = [
    "id_code", "experiment", "plate", "well", "site", "channel", "mean", "std", "median",
    "min", "max",
]  # fmt: skip
V1_COLUMNS = [
    "site_id", "well_id", "cell_type", "dataset", "experiment", "plate", "well", "site",
    "well_type", "sirna", "sirna_id",
]  # fmt: skip


class MetadataError(UserError):
    """A metadata table is missing, malformed or inconsistent; the message names the file."""


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise MetadataError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, dtype={"well": str, "experiment": str, "id_code": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise MetadataError(f"{path}: cannot parse CSV ({e})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise MetadataError(f"{path}: missing column(s) {missing}; has {list(df.columns)}")
    return df


def detect_layout(raw: Path) -> str:
    """``"kaggle"`` if ``raw`` has ``train.csv``/``test.csv``, ``"v1"`` if ``metadata.csv``."""
    raw = Path(raw)
    if (raw / "train.csv").is_file() or (raw / "test.csv").is_file():
        return "kaggle"
    if (raw / "metadata.csv").is_file():
        return "v1"
    raise MetadataError(
        f"{raw}: not an RxRx1 tree (no train.csv/test.csv of the Kaggle layout, "
        "no metadata.csv of the v1.0 layout)"
    )


def load_kaggle(raw: Path, sites: Sequence[int] = (1, 2)) -> pd.DataFrame:
    """Site table from the Kaggle tables in ``raw`` (see module docstring).

    Args:
        raw: Folder holding train.csv / test.csv / *_controls.csv.
        sites: Site numbers imaged in every well (RxRx1: 1 and 2).
    """
    raw = Path(raw)
    wells = []
    for name, required in KAGGLE_COLUMNS.items():
        path = raw / name
        if not path.is_file() and name.startswith("test"):
            continue  # a training-only tree is fine
        df = _read_csv(path, required)
        df["split"] = "train" if name.startswith("train") else "test"
        if "well_type" not in df.columns:
            df["well_type"] = "treatment"
        if "sirna" not in df.columns:
            df["sirna"] = pd.NA
        df["_source"] = str(path)
        wells.append(df[[*KAGGLE_COLUMNS["test.csv"], "sirna", "split", "well_type", "_source"]])
    table = pd.concat(wells, ignore_index=True)
    labels = raw / "test_labels.csv"
    if labels.is_file():
        answer = _read_csv(labels, ["id_code", "sirna"]).set_index("id_code")["sirna"]
        unknown = table["sirna"].isna()
        table.loc[unknown, "sirna"] = table.loc[unknown, "id_code"].map(answer)
    dupes = table["id_code"][table["id_code"].duplicated()]
    if len(dupes):
        src = table.loc[table["id_code"] == dupes.iloc[0], "_source"].tolist()
        raise MetadataError(f"id_code {dupes.iloc[0]!r} appears more than once (in {src})")
    table["cell_type"] = _cell_types(table)
    sites_df = pd.DataFrame({"site": list(sites)})
    table = table.merge(sites_df, how="cross")
    return _finish(table, "Kaggle tables in " + str(raw))


def load_v1(raw: Path) -> pd.DataFrame:
    """Site table from an RxRx1 v1.0 ``metadata.csv`` (one row per site)."""
    path = Path(raw) / "metadata.csv"
    df = _read_csv(path, V1_COLUMNS)
    table = pd.DataFrame(
        {
            "id_code": df["well_id"],
            "experiment": df["experiment"],
            "plate": df["plate"],
            "well": df["well"],
            "site": df["site"],
            "cell_type": df["cell_type"],
            "split": df["dataset"],
            "well_type": df["well_type"],
            "sirna": df["sirna_id"],
            "_source": str(path),
        }
    )
    return _finish(table, str(path))


def load_pixel_stats(raw: Path) -> pd.DataFrame:
    """Kaggle's ``pixel_stats.csv``: one row per (site, channel) with mean/std/median/min/max."""
    path = Path(raw) / "pixel_stats.csv"
    df = _read_csv(path, PIXEL_STATS_COLUMNS)
    bad = ~df["channel"].between(1, 99) | ~df["site"].between(1, 99) | (df["std"] < 0)
    if bad.any():
        row = df[bad].iloc[0]
        raise MetadataError(f"{path}: bad site/channel/std in row for {row.id_code}")
    if df.duplicated(["id_code", "site", "channel"]).any():
        row = df[df.duplicated(["id_code", "site", "channel"])].iloc[0]
        raise MetadataError(f"{path}: {row.id_code} s{row.site} w{row.channel} appears twice")
    return df


def load_raw_metadata(raw: Path, sites: Sequence[int] = (1, 2)) -> tuple[str, pd.DataFrame]:
    """Detect the layout of ``raw`` and load its site table: ``(layout, table)``."""
    layout = detect_layout(raw)
    table = load_kaggle(raw, sites) if layout == "kaggle" else load_v1(raw)
    return layout, table


def _cell_types(table: pd.DataFrame) -> list[str]:
    out = []
    for exp, src in zip(table["experiment"], table["_source"], strict=True):
        try:
            out.append(cell_type_of(exp))
        except ValueError as e:
            raise MetadataError(f"{src}: {e}") from None
    return out


def _finish(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """Add row/col, set dtypes, validate, sort; ``source`` names the input in errors."""
    bad_types = sorted(set(table["well_type"]) - set(WELL_TYPES))
    if bad_types:
        raise MetadataError(f"{source}: unknown well_type value(s) {bad_types}")
    try:
        fmt = PlateFormat.smallest_containing(set(table["well"]))
    except ValueError as e:
        raise MetadataError(f"{source}: {e}") from None
    rows_cols = [fmt.well_index(w) for w in table["well"]]
    table = table.assign(
        row=[r for r, _ in rows_cols],
        col=[c for _, c in rows_cols],
        plate=table["plate"].astype(int),
        site=table["site"].astype(int),
        sirna=pd.array(table["sirna"], dtype="Int64"),
    )
    expected = [
        id_code(e, p, w) for e, p, w in zip(table.experiment, table.plate, table.well, strict=True)
    ]
    mismatch = np.flatnonzero(table["id_code"].to_numpy() != np.array(expected, dtype=object))
    if len(mismatch):
        i = mismatch[0]
        raise MetadataError(
            f"{table['_source'].iloc[i]}: id_code {table['id_code'].iloc[i]!r} does not match "
            f"experiment/plate/well ({expected[i]!r})"
        )
    table = table.sort_values(["experiment", "plate", "row", "col", "site"], ignore_index=True)
    table = table[SITE_COLUMNS].astype({"split": str, "well_type": str, "cell_type": str})
    validate_site_table(table, source)
    return table


def validate_site_table(table: pd.DataFrame, source: str = "site table") -> None:
    """Raise MetadataError (naming ``source``) if ``table`` breaks the site-table contract."""
    missing = [c for c in SITE_COLUMNS if c not in table.columns]
    if missing:
        raise MetadataError(f"{source}: missing column(s) {missing}")
    dupes = table.duplicated(["id_code", "site"])
    if dupes.any():
        row = table[dupes].iloc[0]
        raise MetadataError(f"{source}: site {row.id_code} s{row.site} appears more than once")
    bad_split = sorted(set(table["split"]) - {"train", "test"})
    if bad_split:
        raise MetadataError(f"{source}: unknown split value(s) {bad_split}")
    unlabeled = table["split"].eq("train") & table["sirna"].isna()
    if unlabeled.any():
        raise MetadataError(
            f"{source}: training well {table[unlabeled].id_code.iloc[0]} has no sirna"
        )
    if (table["sirna"].dropna() < 0).any():
        raise MetadataError(f"{source}: negative sirna label")


def plate_groups(table: pd.DataFrame) -> list[frozenset[int]]:
    """The disjoint treatment groups implied by which treatments share a plate.

    RxRx1 plates each carry one of 4 groups of 277 siRNAs. Treatments seen on the
    same labelled plate belong to the same group; overlapping plate sets are merged
    (union-find), so partially imaged plates still resolve. Returns groups sorted by
    their smallest label.
    """
    treat = table[(table["well_type"] == "treatment") & table["sirna"].notna()]
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for _, labels in treat.groupby(["experiment", "plate"])["sirna"]:
        first, *rest = (int(v) for v in labels.unique())
        for other in rest:
            parent[find(other)] = find(first)
        find(first)
    groups: dict[int, set[int]] = {}
    for label in parent:
        groups.setdefault(find(label), set()).add(label)
    out = sorted((frozenset(g) for g in groups.values()), key=min)
    if len(out) != 4:
        log.warning("found %d treatment groups across plates (RxRx1 has 4)", len(out))
    return out


def sites_of(table: pd.DataFrame, experiments: Iterable[str] | None) -> pd.DataFrame:
    """Rows of ``table`` in ``experiments`` (all if None); error naming unknown experiments."""
    if experiments is None:
        return table
    wanted = list(experiments)
    unknown = sorted(set(wanted) - set(table["experiment"]))
    if unknown:
        raise MetadataError(
            f"unknown experiment(s) {unknown}; available: {sorted(set(table['experiment']))}"
        )
    return table[table["experiment"].isin(wanted)].reset_index(drop=True)
