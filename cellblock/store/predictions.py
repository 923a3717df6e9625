"""The predictions store: ``PRED/predictions.zarr``, written by 03_predict, read by 04_ensemble.

Layout (DESIGN §2)::

    predictions.zarr/                 root attrs "cellblock_predictions": PredictionInfo
      {EXPERIMENT}/Plate{p}/          the plate's path in the dataset's images.zarr too
        logits        float32 (row, col, site, n_classes)   fill NaN: never predicted
        embeddings    float16 (row, col, site, D)           fill NaN
        attrs "cellblock": {"experiment", "plate", "rows", "columns"}

``rows`` and ``columns`` name the row and col indices as the dataset's OME-Zarr plate
names them (``ome.plate.rows/columns``: ``A``.., ``01``..), and site ``s`` is field
``s - 1``, so the prediction of ``logits[r, c, s]`` belongs to the field
``images.zarr/{EXPERIMENT}/Plate{p}/{rows[r]}/{columns[c]}/{s}``.

Chunk = one well (all its sites), so any block of whole wells writes whole chunks and two
workers never touch the same chunk. Wells a plate does not use are never written and
read back as NaN; ``read_sites`` returns only the sites the dataset has.
"""

from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from cellblock.errors import CorruptDataError, UserError
from cellblock.screen.plates import PlateFormat, parse_plate_key, plate_key
from cellblock.store.chunkwrite import ChunkWriter
from cellblock.store.omezarr import row_col_names
from cellblock.store.packed import PackedDataset
from cellblock.store.predinfo import ATTR, FORMAT_VERSION, PredictionInfo

# FORMAT_VERSION, PredictionInfo: cellblock.store.predinfo, re-exported
__all__ = [
    "FORMAT_VERSION",
    "PredictionInfo",
    "create_store",
    "damaged_wells",
    "open_info",
    "predicted_plates",
    "read_sites",
    "store_path",
    "write_wells",
]

log = logging.getLogger(__name__)
# zarr's default compressor (zstd level 0), then a crc32c checksum that every reader
# (ours through zarr-python, tensorstore) verifies: a damaged chunk is an error, not
# silently wrong logits in a submission
CHUNK_CODECS = (ZstdCodec(level=0, checksum=False), Crc32cCodec())


def store_path(pred: Path | str) -> Path:
    """``PRED/predictions.zarr`` (``pred`` may also name the store itself)."""
    pred = Path(pred)
    return pred if pred.name == "predictions.zarr" else pred / "predictions.zarr"


def create_store(
    pred: Path | str,
    info: PredictionInfo,
    packed: PackedDataset,
    plates: list[str],
    overwrite: bool = False,
) -> Path:
    """Create (or reopen, if it matches) the store and its per-plate arrays.

    Reopening is what makes a rerun resume: an existing store with the same classes,
    embedding width and dataset is kept as it is; anything else is a UserError unless
    ``overwrite`` (which deletes it first).

    Args:
        pred: Output folder (``PRED``) or the store path.
        info: Provenance and shapes.
        packed: The dataset predicted (plate geometry comes from it).
        plates: ``"EXP/PlateN"`` keys to create.
        overwrite: Delete an existing store first.

    Returns:
        The store path.
    """
    path = store_path(pred)
    root = _open_root(path, info, overwrite)
    for key in plates:
        if key not in root:
            _create_plate(root, key, info, packed)
    return path


def _open_root(path: Path, info: PredictionInfo, overwrite: bool) -> zarr.Group:
    """The store's root group: created, or reopened if its classes, width, dataset and
    channels match ``info`` (its provenance then updated); ``create_store``'s arguments.
    """
    if overwrite and path.exists():
        shutil.rmtree(path)
    if path.exists():
        old = open_info(path)
        for key in ("classes", "embedding_dim", "dataset", "channels"):
            if getattr(old, key) != getattr(info, key):
                raise UserError(
                    f"{path} exists with another {key} ({getattr(old, key)!r}); "
                    "use --overwrite or another --out"
                )
        root = zarr.open_group(path, mode="r+")
    else:
        root = zarr.open_group(path, mode="w")
    root.attrs[ATTR] = info.to_json()  # latest provenance (e.g. a later iteration)
    return root


def _create_plate(root: zarr.Group, key: str, info: PredictionInfo, packed: PackedDataset) -> None:
    """A plate's group (its row and column names) and its two NaN-filled arrays."""
    rows, cols, sites = packed.info.plate_shape[:3]
    experiment, plate = parse_plate_key(key)
    group = root.require_group(key)
    row_names, col_names = row_col_names(packed.info.plate_format)
    group.attrs["cellblock"] = {"experiment": experiment, "plate": plate,
                                "rows": row_names, "columns": col_names}  # fmt: skip
    for name, width, dtype in (
        ("logits", info.n_classes, "float32"),
        ("embeddings", info.embedding_dim, "float16"),
    ):
        group.create_array(
            name,
            shape=(rows, cols, sites, width),
            chunks=(1, 1, sites, width),
            dtype=dtype,
            fill_value=np.nan,
            compressors=CHUNK_CODECS,
            dimension_names=("row", "col", "site", "class" if name == "logits" else "dim"),
        )


def write_wells(
    path: Path | str,
    key: str,
    wells: list[tuple[int, int]],
    logits: np.ndarray,
    embeddings: np.ndarray,
) -> None:
    """Write whole wells of one plate (idempotent: same input, same bytes).

    Args:
        path: The store (``store_path``).
        key: ``"EXP/PlateN"``.
        wells: 0-based ``(row, col)`` of each well.
        logits: ``(n_wells, sites, n_classes)``.
        embeddings: ``(n_wells, sites, D)``.
    """
    plate = Path(path, key)
    for name, values in (("logits", logits), ("embeddings", embeddings)):
        writer = ChunkWriter.open(plate / name)  # a chunk per well: written as files
        if writer is None or writer.chunk_shape != (1, 1, *values.shape[1:]):
            # a layout we did not make: zarr-python writes it
            array = zarr.open_array(plate / name, mode="r+")
            for i, (row, col) in enumerate(wells):
                array[row, col] = values[i]
            continue
        for i, (row, col) in enumerate(wells):
            writer.write_chunk((row, col, 0, 0), values[i][None, None])


def damaged_wells(
    path: Path | str, key: str, wells: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The wells of one plate whose logits or embeddings chunk is missing or damaged.

    What a rerun checks before it trusts a done marker: the chunk file is there and,
    where the array carries checksums, its crc32c matches (a read of a few KB per well;
    nothing is decoded). Arrays of a layout ``ChunkWriter`` does not write are read
    through zarr instead.

    Args:
        path: The store (``store_path``).
        key: ``"EXP/PlateN"``.
        wells: 0-based ``(row, col)`` of the wells to check.
    """
    bad: set[tuple[int, int]] = set()
    for name in ("logits", "embeddings"):
        writer = ChunkWriter.open(Path(path, key, name))
        for row, col in wells:
            if (row, col) in bad:
                continue
            if writer is None:
                ok = _well_readable(Path(path, key, name), row, col)
            else:
                ok = writer.intact((row, col, 0, 0))
            if not ok:
                bad.add((row, col))
    return [w for w in wells if w in bad]


def _well_readable(array: Path, row: int, col: int) -> bool:
    """One well of a store array decodes and is not all NaN (``damaged_wells``)."""
    try:
        values = zarr.open_array(array, mode="r")[row, col]
    except Exception:  # zarr raises several types for a missing or damaged array or chunk
        return False
    return not bool(np.isnan(values).all())


def open_info(pred: Path | str) -> PredictionInfo:
    """The store's ``PredictionInfo``; a missing or foreign store is a UserError."""
    path = store_path(pred)
    if not path.is_dir():
        raise UserError(f"{path}: no predictions store here")
    try:
        attrs = zarr.open_group(path, mode="r").attrs.asdict()
    except Exception as err:  # zarr raises several types for a non-group folder
        raise UserError(f"{path}: not a zarr group ({err})") from None
    return PredictionInfo.from_json(attrs.get(ATTR), str(path))


def predicted_plates(pred: Path | str) -> list[str]:
    """``"EXP/PlateN"`` of every plate the store holds, sorted.

    Args:
        pred: Output folder or store.
    """
    path = store_path(pred)
    open_info(path)
    return _plate_keys(zarr.open_group(path, mode="r"))


def _plate_keys(root: zarr.Group) -> list[str]:
    """``"EXP/PlateN"`` of every plate group of a store, sorted."""
    return sorted(f"{e}/{p}" for e, group in root.groups() for p in group.group_keys())


def read_sites(
    pred: Path | str, table: pd.DataFrame
) -> tuple[PredictionInfo, np.ndarray, np.ndarray]:
    """Logits and embeddings of the sites in ``table``, in its row order.

    Args:
        pred: Output folder or store.
        table: Site-table rows (``experiment``, ``plate``, ``row``, ``col``, ``site``).

    Returns:
        ``(info, logits (n, n_classes) float32, embeddings (n, D) float32)``.

    Raises:
        UserError: A plate of ``table`` is not in the store, or a site was never predicted.
    """
    path = store_path(pred)
    info = open_info(path)
    root = zarr.open_group(path, mode="r")
    logits = np.empty((len(table), info.n_classes), np.float32)
    embeddings = np.empty((len(table), info.embedding_dim), np.float32)
    positions = np.arange(len(table))
    for (experiment, plate), part in table.groupby(["experiment", "plate"], sort=False):
        key = plate_key(experiment, int(plate))
        if key not in root:
            have = _plate_keys(root)
            raise UserError(f"{path}: no predictions for plate {key} (have {have})")
        where = positions[table.index.get_indexer(part.index)]
        r, c, s = (part[k].to_numpy() for k in ("row", "col", "site"))
        logits[where] = _read_array(root, key, "logits", path)[r, c, s - 1]
        embeddings[where] = _read_array(root, key, "embeddings", path)[r, c, s - 1]
        for name, values in (("logits", logits[where]), ("embeddings", embeddings[where])):
            _check_no_holes(path, key, name, values, part)
    return info, logits, embeddings


def _check_no_holes(
    path: Path, key: str, name: str, values: np.ndarray, part: pd.DataFrame
) -> None:
    """Raise if a site of ``part`` has no ``name`` (NaN: its chunk was never written, or
    is gone); names plate, well and site, and the rerun that repairs it."""
    missing = np.isnan(values).any(axis=1)
    if missing.any():
        first = part.iloc[int(np.argmax(missing))]
        raise UserError(
            f"{path}: {int(missing.sum())} sites of plate {key} have no {name} "
            f"(first: well {first['well']} site {first['site']}): never predicted, or the "
            "chunk is gone; rerun the prediction (a rerun predicts missing chunks again)"
        )


def _read_array(root: zarr.Group, key: str, name: str, store: Path) -> np.ndarray:
    """All of one plate's ``logits`` or ``embeddings`` (``name``), checksums verified.

    Raises:
        CorruptDataError: A chunk fails its crc32c checksum or does not decode; names the
            store, plate, array and well (a group in the array's place too).
    """
    array = root[f"{key}/{name}"]
    if not isinstance(array, zarr.Array):
        raise CorruptDataError(f"{store}: plate {key}: {name} is a group, not an array")
    if not any(isinstance(c, Crc32cCodec) for c in getattr(array.metadata, "codecs", ())):
        _warn_unverified(store)
    try:
        return np.asarray(array[:])
    except (ValueError, RuntimeError):  # zarr: ValueError on a crc32c mismatch
        pass
    fmt = PlateFormat(array.shape[0], array.shape[1])
    for row in range(array.shape[0]):  # find the damaged chunk (one per well) to name it
        for col in range(array.shape[1]):
            try:
                array[row, col]
            except (ValueError, RuntimeError) as err:
                raise CorruptDataError(
                    f"{store}: plate {key} {array.basename} of well {fmt.well_name(row, col)} "
                    f"is damaged ({err}); predict it again (03_predict/predict_blockwise.py "
                    "--overwrite)"
                ) from None
    return np.asarray(array[:])


@functools.cache
def _warn_unverified(store: Path) -> None:
    """Once per store and process: its chunks carry no checksums (written before them)."""
    log.warning("%s: predictions written without chunk checksums (an older cellblock): "
                "reads are not verified", store)  # fmt: skip
