"""Both reference probes on one dataset, as one report (``04_ensemble/reference_probes.py``)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from cellblock.errors import UserError
from cellblock.finished import require_finished
from cellblock.probes.imagestats import feature_names, site_table
from cellblock.probes.reference import WELL_COLUMNS, run_probe, well_means
from cellblock.store.packed import PackedDataset

__all__ = ["ensemble_accuracy", "oracle_sites", "reference_probes"]

log = logging.getLogger(__name__)


def oracle_sites(sites: pd.DataFrame, traits: Path | str) -> tuple[pd.DataFrame, list[str]]:
    """``sites`` joined with a synthetic screen's ``site_traits.csv``; and the trait columns.

    Args:
        sites: Site-table rows (``id_code``, ``site``, ...).
        traits: The generator's ``site_traits.csv`` (``id_code, site, n_cells, <traits>``).

    Raises:
        UserError: The file lacks its key columns, or some site has no traits row.
    """
    try:
        table = pd.read_csv(traits)
    except (OSError, ValueError) as err:
        raise UserError(f"{traits}: cannot read the site traits ({err})") from None
    missing = sorted({"id_code", "site", "n_cells"} - set(table.columns))
    if missing:
        raise UserError(f"{traits}: no column(s) {missing} (is it a synthetic screen's "
                        "site_traits.csv?)")  # fmt: skip
    names = [c for c in table.columns if c not in ("id_code", "site", "n_cells")]
    joined = sites.merge(table, on=["id_code", "site"], how="left", validate="one_to_one")
    absent = joined[names[0]].isna() if names else joined["n_cells"].isna()
    if absent.any():
        first = joined.loc[absent].iloc[0]
        raise UserError(f"{traits}: no traits for {int(absent.sum())} site(s), e.g. "
                        f"{first.id_code} site {first.site}")  # fmt: skip
    return joined, names


def ensemble_accuracy(out: Path | str) -> dict[str, Any]:
    """The ``accuracy`` of an ``ensemble.py`` output folder's ``report.json``.

    Raises:
        UserError: No finished report there (or a stopped, running or mixed run's).
    """
    require_finished(out, "ensemble")
    path = Path(out) / "report.json"
    try:
        return json.loads(path.read_text())["accuracy"]
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{path}: no ensemble report ({err}); run 04_ensemble/ensemble.py "
                        "first") from None  # fmt: skip


def reference_probes(
    dataset: Path | str,
    traits: Path | str | None = None,
    held_out: str = "test",
    workers: int = 1,
    progress: bool = True,
    kind: str = "lda",
) -> dict[str, Any]:
    """The image-statistics probe (and with ``traits`` the oracle probe) of ``dataset``.

    Args:
        dataset: The packed dataset.
        traits: A synthetic screen's ``site_traits.csv`` (None: no oracle).
        held_out: The split scored.
        workers: Processes computing image statistics.
        progress: Show progress (``cellblock.progress``).
        kind: The probe (``cellblock.profiling.probes.make_probe``).

    Returns:
        ``{"dataset", "held_out", "probes": {"image": ..., "oracle": ...}}``
        (``cellblock.probes.reference.run_probe`` reports).
    """
    packed = PackedDataset(dataset)
    table = packed.metadata
    sites = table[table["split"].isin(["train", held_out])]
    if sites.empty:
        raise UserError(f"{dataset}: no train or {held_out} sites")
    report: dict[str, Any] = {"dataset": str(Path(dataset).resolve()), "held_out": held_out,
                              "probes": {}}  # fmt: skip
    start = time.monotonic()
    stats = site_table(dataset, sites, workers, progress)
    features = feature_names(list(packed.info.channels))
    report["probes"]["image"] = run_probe(
        well_means(stats, features), features, table, held_out, kind
    )
    report["probes"]["image"]["seconds"] = round(time.monotonic() - start, 1)
    if traits is not None:
        start = time.monotonic()
        joined, names = oracle_sites(sites[[*WELL_COLUMNS, "site"]], traits)
        report["probes"]["oracle"] = run_probe(
            well_means(joined, names), names, table, held_out, kind
        )
        report["probes"]["oracle"]["seconds"] = round(time.monotonic() - start, 1)
    return report
