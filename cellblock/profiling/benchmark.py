"""The representation benchmark: models' well profiles scored side by side.

A model is a predictions store (its embeddings are read, reduced and aligned here) or
an ensemble output (``04_ensemble/ensemble.py``'s ``profiles.parquet``, as it is; its
stores, from ``report.json``, give the rotation metric). Each is scored on the wells of
one split (default: the held-out test experiments) with the answer key joined in memory
(never written next to profiles):

* ``activity`` / ``consistency``: copairs mAP and the fraction significant (``mapscore``);
* ``linear_probe``: siRNA accuracy on held-out experiments (``probes``);
* ``batch``: probe accuracy for experiment and plate, lower is better (``probes``);
* ``rotation``: embedding similarity under the D4 transforms (``rotation``);
* ``intrinsic_dimension``: TwoNN compactness (``geometry``);
* ``relationships``: known-relationship recall vs the random-pair rate (``relations``).

Outputs in ``BENCH``: ``benchmark.json``, ``benchmark.md`` and ``benchmark.png``
(``benchreport``); one writer, an earlier run's cleared, ``finished.json`` last
(``cellblock.finished``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import cellblock
from cellblock.errors import UserError
from cellblock.finished import output_folder, require_finished
from cellblock.profiling import benchreport
from cellblock.profiling.align import ALIGNMENTS, DEFAULT_ALIGN
from cellblock.profiling.geometry import intrinsic_dimension
from cellblock.profiling.mapscore import copairs_map
from cellblock.profiling.probes import batch_probe, linear_probe
from cellblock.profiling.relations import read_relationships, relationship_recall
from cellblock.profiling.rotation import rotation_invariance
from cellblock.profiling.table import (
    aligned_table,
    feature_columns,
    metadata_columns,
    read_well_embeddings,
)
from cellblock.screen.sites import check_split
from cellblock.store.packed import PackedDataset
from cellblock.store.predictions import store_path

__all__ = ["evaluation_meta", "load_model", "run_benchmark", "score_profiles"]

log = logging.getLogger(__name__)
OUTPUTS = ("benchmark.json", "benchmark.md", "benchmark.png")  # BENCH/, cleared per run


def load_model(
    path: Path | str,
    packed: PackedDataset,
    split: str = "test",
    align: str = DEFAULT_ALIGN,
    profile_dim: int = 512,
) -> tuple[pd.DataFrame, list[Path], str]:
    """A model's aligned profile table over ``split``, its stores, and its alignment.

    Args:
        path: A prediction folder / ``predictions.zarr``, or an ensemble output folder.
        packed: The dataset predicted.
        split: Wells scored (``"test"``, ``"train"``, ``"all"``).
        align: Alignment of a store's profiles (an ensemble output keeps its own).
        profile_dim: Widest profile of a store (wider: leading principal components).

    Raises:
        UserError: Neither a store nor an ensemble output, or no wells of ``split``.
    """
    path = Path(path)
    require_finished(path, "ensemble")  # an ensemble output: a finished one
    if (path / "profiles.parquet").is_file() and (path / "report.json").is_file():
        report = json.loads((path / "report.json").read_text())
        table = pd.read_parquet(path / "profiles.parquet")
        feature_columns(table)  # a profile table at all
        if split != "all":
            table = table[table["Metadata_split"] == split].reset_index(drop=True)
        if table.empty:
            raise UserError(f"{path}/profiles.parquet: no wells of split {split!r}")
        stores = [Path(i["path"]) for i in report.get("inputs", [])]
        return table, stores, str(report.get("profiles", {}).get("align", "unknown"))
    if not store_path(path).exists():
        raise UserError(f"{path}: neither a predictions store nor an ensemble output "
                        "(no predictions.zarr, no profiles.parquet + report.json)")  # fmt: skip
    embeddings = read_well_embeddings([path], packed, split)
    return aligned_table(embeddings, align, profile_dim), [store_path(path)], align


def evaluation_meta(table: pd.DataFrame, packed: PackedDataset) -> pd.DataFrame:
    """The table's metadata with ``Metadata_sirna`` from the dataset's answer key.

    Args:
        table: A profile table (``Metadata_id_code`` names the wells).
        packed: The dataset, whose ``sirna`` column is the answer key.

    Raises:
        UserError: A well of the table is not in the dataset.
    """
    key = packed.metadata.drop_duplicates("id_code").set_index("id_code")["sirna"]
    codes = table["Metadata_id_code"]
    unknown = ~codes.isin(key.index)
    if unknown.any():
        raise UserError(f"profile table: well {codes[unknown].iloc[0]!r} is not in "
                        f"{packed.path}; profiles of another dataset?")  # fmt: skip
    meta = table[metadata_columns(table)].copy()
    meta["Metadata_sirna"] = key.loc[codes].astype("Int64").to_numpy()
    return meta


def score_profiles(
    meta: pd.DataFrame,
    features: np.ndarray,
    relationships: pd.DataFrame | None = None,
    null_size: int = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric that needs only profiles (all but rotation).

    Args:
        meta: ``evaluation_meta`` output.
        features: ``(n_wells, D)`` aligned profiles.
        relationships: Known pairs (``read_relationships``), or None.
        null_size: copairs null size per siRNA.
        seed: Seed of every null and fold.
    """
    out: dict[str, Any] = {
        kind: copairs_map(meta, features, kind, null_size=null_size, seed=seed)
        for kind in ("activity", "consistency")
    }
    out["linear_probe"] = linear_probe(meta, features)
    out["batch"] = batch_probe(meta, features, seed)
    out["intrinsic_dimension"] = intrinsic_dimension(features)
    out["relationships"] = (
        relationship_recall(meta, features, relationships, seed=seed)
        if relationships is not None
        else None
    )
    return out


def _rotation(stores: list[Path], packed: PackedDataset, table: pd.DataFrame, n_sites: int,
              seed: int, device: str) -> dict[str, Any] | None:  # fmt: skip
    if n_sites <= 0 or not stores:
        return None
    sites = packed.metadata[packed.metadata["id_code"].isin(table["Metadata_id_code"])]
    results = []
    for store in stores:
        if not store.exists():
            log.warning("%s: not reachable, rotation invariance not measured", store)
            return None
        result = rotation_invariance(store, packed, sites, n_sites, seed, device)
        if result is None:
            return None
        results.append(result)
    return {
        "mean_cosine": float(np.mean([r["mean_cosine"] for r in results])),
        "views": results[0]["views"],
        "sites": results[0]["sites"],
        "stores": len(results),
    }


def run_benchmark(
    inputs: Sequence[Path | str],
    data: Path | str,
    out: Path | str,
    *,
    names: Sequence[str] | None = None,
    split: str = "test",
    align: str = DEFAULT_ALIGN,
    relationships: Path | str | None = None,
    profile_dim: int = 512,
    null_size: int = 10000,
    rotation_sites: int = 64,
    seed: int = 0,
    device: str = "auto",
) -> dict[str, Any]:
    """Score each model and write ``benchmark.json``, ``benchmark.md``, ``benchmark.png``.

    Long because each of its twelve options is documented here; the body is a few
    calls (:func:`_checked_names`, :func:`_score_model`, ``benchreport``).

    Args:
        inputs: Predictions stores or ensemble outputs, one per model.
        data: The packed dataset they predicted (its answer key scores them).
        out: Output folder (created).
        names: A name per model (default: the folder names).
        split: Wells scored.
        align: Alignment of stores' profiles (``align.ALIGNMENTS``).
        relationships: A relationship table (CSV), or None.
        profile_dim: Widest profile of a store.
        null_size: copairs null size per siRNA.
        rotation_sites: Sites embedded under each D4 view (0: skip the metric).
        seed: Seed of every sample, null and fold.
        device: Where models run for the rotation metric.

    Returns:
        The benchmark (as written to ``benchmark.json``).

    Raises:
        UserError: Bad names, split or alignment, or an unreadable input.
    """
    names = _checked_names(inputs, names, split, align)
    pairs = read_relationships(relationships) if relationships else None
    with output_folder(out, "benchmark", OUTPUTS) as folder:  # one writer; old outputs gone
        packed = PackedDataset(data)
        models = [
            _score_model(
                name,
                path,
                packed,
                pairs,
                split=split,
                align=align,
                profile_dim=profile_dim,
                null_size=null_size,
                rotation_sites=rotation_sites,
                seed=seed,
                device=device,
            )
            for name, path in zip(names, inputs, strict=True)
        ]
        bench: dict[str, Any] = {
            "dataset": str(packed.path.resolve()),
            "split": split,
            "relationships": str(relationships) if relationships else None,
            "null_size": null_size,
            "seed": seed,
            "models": models,
            "code_version": cellblock.__version__,
        }
        bench["outputs"] = {
            "markdown": str(benchreport.write_markdown(bench, folder / "benchmark.md")),
            "plot": str(benchreport.plot_polar(bench, folder / "benchmark.png")),
        }
        benchreport.write_json(bench, folder / "benchmark.json")
    return bench


def _score_model(
    name: str,
    path: Path | str,
    packed: PackedDataset,
    pairs: pd.DataFrame | None,
    *,
    split: str,
    align: str,
    profile_dim: int,
    null_size: int,
    rotation_sites: int,
    seed: int,
    device: str,
) -> dict[str, Any]:
    """One model's entry of the benchmark (arguments: ``run_benchmark``'s).

    Args:
        name: The model's name.
        path: Its predictions store or ensemble output.
        packed: The dataset.
        pairs: The relationship table, or None.
        split: Wells scored.
        align: Alignment of stores' profiles.
        profile_dim: Widest profile of a store.
        null_size: copairs null size per siRNA.
        rotation_sites: Sites embedded under each D4 view (0: skip the metric).
        seed: Seed of every sample, null and fold.
        device: Where models run for the rotation metric.
    """
    table, stores, how = load_model(path, packed, split, align, profile_dim)
    features = table[feature_columns(table)].to_numpy(np.float64)
    scores = score_profiles(evaluation_meta(table, packed), features, pairs, null_size, seed)
    scores["rotation"] = _rotation(stores, packed, table, rotation_sites, seed, device)
    model = {"name": name, "input": str(path), "align": how, "n_wells": len(table),
             "profile_dim": features.shape[1], **scores}  # fmt: skip
    log.info("benchmark %s: %s", name, benchreport.headline(model))
    return model


def _checked_names(
    inputs: Sequence[Path | str], names: Sequence[str] | None, split: str, align: str
) -> list[str]:
    """The models' names, once the arguments are checked (``run_benchmark``'s).

    Raises:
        UserError: No inputs; bad names, split or alignment.
    """
    if not inputs:
        raise UserError("no models given")
    check_split(split)
    if align not in ALIGNMENTS:
        raise UserError(f"--align {align!r}: expected one of {', '.join(ALIGNMENTS)}")
    names = list(names) if names else [_default_name(Path(p)) for p in inputs]
    if len(names) != len(inputs) or len(set(names)) != len(names):
        raise UserError(f"--names: need {len(inputs)} distinct names, got {names}")
    return names


def _default_name(path: Path) -> str:
    path = path.parent if path.name == "predictions.zarr" else path
    return path.name
