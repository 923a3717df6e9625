"""Write a synthetic screen to disk in the RxRx1 Kaggle (or v1.0) layout.

Kaggle layout (what ``make_synthetic.py`` writes by default)::

    OUT/train/{EXP}/Plate{p}/{WELL}_s{site}_w{ch}.png      train experiments
    OUT/test/{EXP}/Plate{p}/...                            held-out experiments
    OUT/train.csv  test.csv  train_controls.csv  test_controls.csv
    OUT/pixel_stats.csv  sample_submission.csv
    OUT/test_labels.csv     answer key of test.csv (not in Kaggle's release)
    OUT/site_traits.csv     per site: its cells' mean log trait shifts and cell count, the
                            truth behind the pixels (the oracle probe's input;
                            cellblock.probes), not in any real release
    OUT/synthetic.json      the generator's config, for provenance
    OUT/relationships.csv   known relationships (sirna_a, sirna_b, relationship), only
                            when siRNAs share genes or genes share pathways

v1.0 layout: ``OUT/images/{EXP}/Plate{p}/...`` and one ``OUT/metadata.csv``.
Work is split by plate row across processes; tables are written last (atomically),
so an interrupted run is visibly incomplete and a rerun rewrites the same bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cellblock.atomic import atomic_write_csv, atomic_write_text
from cellblock.parallel import ordered_map
from cellblock.progress import progress_bar
from cellblock.screen.plates import id_code, plate_dir, site_filename
from cellblock.synth.config import EXTRA_FIELDS, SynthConfig
from cellblock.synth.design import Design, PlateDesign
from cellblock.synth.render import render_site
from cellblock.synth.traits import BASE, TRAITS

__all__ = ["write_dataset"]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def _design(config: SynthConfig) -> Design:
    return Design(config)


def _render_row(
    args: tuple[SynthConfig, str, str, PlateDesign, list[str]],
) -> tuple[list[tuple], list[tuple]]:
    """Render and write every site of ``wells``; return their pixel statistics and traits."""
    config, out, layout, plate, wells = args
    design = _design(config)
    folder = Path(out) / plate_dir(layout, plate.split, plate.experiment, plate.plate)
    folder.mkdir(parents=True, exist_ok=True)
    stats, traits = [], []
    for well in wells:
        label = plate.wells[well]
        shift = design.trait_shift(plate, label)
        for site in range(1, config.n_sites + 1):
            rng = design.site_rng(plate, well, site)
            image, site_traits, n_cells = render_site(
                BASE[plate.cell_type],
                shift,
                plate,
                size=config.image_size,
                cell_variation=config.cell_variation,
                coverage=config.coverage,
                rng=rng,
            )
            code = id_code(plate.experiment, plate.plate, well)
            traits.append((code, site, n_cells, *np.round(site_traits, 5).tolist()))
            for ch in range(image.shape[0]):
                # zlib level 1: 6x faster to write than the default, same decode cost
                png = folder / site_filename(well, site, ch + 1)
                Image.fromarray(image[ch]).save(png, compress_level=1)
                px = image[ch]
                stats.append(
                    (
                        code,
                        plate.experiment,
                        plate.plate,
                        well,
                        site,
                        ch + 1,
                        float(px.mean()),
                        float(px.std()),
                        float(np.median(px)),
                        int(px.min()),
                        int(px.max()),
                    )
                )
    return stats, traits


def write_dataset(
    config: SynthConfig,
    out: Path,
    layout: str = "kaggle",
    experiments: list[str] | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Generate the dataset of ``config`` into ``out``.

    Args:
        config: What to generate (see ``SynthConfig``).
        out: Output folder (created).
        layout: ``"kaggle"`` or ``"v1"``.
        experiments: Only these experiments (default: all). The bytes of an
            experiment do not depend on which others are generated.
        workers: Processes to render with.
        progress: Show a progress bar.

    Returns:
        A summary: experiments, plates, sites, classes, files.
    """
    if layout not in ("kaggle", "v1"):
        raise ValueError(f"unknown layout {layout!r}; expected 'kaggle' or 'v1'")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    design = _design(config)
    plates = design.plates(experiments)
    fmt = design.plate_format
    tasks = []
    for plate in plates:
        for row in range(fmt.n_rows):
            wells = [w for w in plate.wells if fmt.well_index(w)[0] == row]
            if wells:
                tasks.append((plate, wells))
    n_sites = sum(len(w) for _, w in tasks) * config.n_sites
    stats: list[tuple] = []
    traits: list[tuple] = []
    args = [(config, str(out), layout, p, w) for p, w in tasks]
    with progress_bar(total=n_sites, unit="site", desc="synthesize", disable=not progress) as bar:
        for (_, wells), rows in zip(tasks, ordered_map(_render_row, args, workers), strict=True):
            stats += rows[0]
            traits += rows[1]
            bar.update(len(wells) * config.n_sites)
    columns = ["id_code", "site", "n_cells", *TRAITS]
    atomic_write_csv(pd.DataFrame(traits, columns=columns), out / "site_traits.csv")
    _write_tables(design, plates, out, layout, stats)  # synthetic.json last: complete
    return {
        "experiments": len({p.experiment for p in plates}),
        "plates": len(plates),
        "sites": n_sites,
        "classes": config.n_classes,
        "files": n_sites * 6,
        "plate_wells": fmt.n_wells,
    }


_WELL_COLUMNS = ["id_code", "experiment", "plate", "well"]  # every table starts so


def _write_tables(
    design: Design, plates: list[PlateDesign], out: Path, layout: str, stats: list[tuple]
) -> None:
    """The raw tree's tables, pixel_stats.csv, relationships.csv and synthetic.json (last).

    Args:
        design: The dataset's design.
        plates: Its plates.
        out: The raw tree.
        layout: ``"kaggle"`` (train/test CSVs) or ``"v1.0"`` (one metadata.csv).
        stats: The rendered sites' pixel statistics rows.
    """
    cfg = design.config
    rows = [
        dict(
            id_code=id_code(p.experiment, p.plate, w),
            experiment=p.experiment,
            plate=p.plate,
            well=w,
            sirna=label,
            well_type=design.well_type(label),
            split=p.split,
            cell_type=p.cell_type,
        )
        for p in plates
        for w, label in p.wells.items()
    ]
    wells = pd.DataFrame(rows)
    if layout == "kaggle":
        _write_kaggle_tables(wells, out)
    else:
        atomic_write_csv(_v1_metadata(wells, cfg.n_sites), out / "metadata.csv")
    stat_cols = [*_WELL_COLUMNS, "site", "channel", "mean", "std", "median", "min", "max"]
    pixel = pd.DataFrame(stats, columns=stat_cols)
    pixel = pixel.sort_values(["experiment", "plate", "well", "site", "channel"])
    atomic_write_csv(pixel, out / "pixel_stats.csv")
    info = {
        "generator": "cellblock.synth",
        "layout": layout,
        "plate_wells": design.plate_format.n_wells,
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in EXTRA_FIELDS}
        | cfg.non_default_extras(),
    }
    if cfg.has_relationships:
        atomic_write_csv(design.relationships(), out / "relationships.csv")
    atomic_write_text(out / "synthetic.json", json.dumps(info, indent=2) + "\n")
    log.info("wrote tables to %s (pid %d)", out, os.getpid())


def _write_kaggle_tables(wells: pd.DataFrame, out: Path) -> None:
    """Kaggle's tables of ``wells`` (one row per well), test labels and a sample submission."""
    treat = wells["well_type"] == "treatment"
    train = wells["split"] == "train"
    atomic_write_csv(wells[train & treat][[*_WELL_COLUMNS, "sirna"]], out / "train.csv")
    atomic_write_csv(wells[~train & treat][_WELL_COLUMNS], out / "test.csv")
    ctrl_cols = [*_WELL_COLUMNS, "sirna", "well_type"]
    atomic_write_csv(wells[train & ~treat][ctrl_cols], out / "train_controls.csv")
    atomic_write_csv(wells[~train & ~treat][ctrl_cols], out / "test_controls.csv")
    atomic_write_csv(wells[~train & treat][["id_code", "sirna"]], out / "test_labels.csv")
    sample = wells[~train & treat][["id_code"]].assign(sirna=0)
    atomic_write_csv(sample, out / "sample_submission.csv")


def _v1_metadata(wells: pd.DataFrame, n_sites: int) -> pd.DataFrame:
    """The v1.0 release's metadata.csv of ``wells``: one row per site."""
    sites = wells.merge(pd.DataFrame({"site": range(1, n_sites + 1)}), how="cross")
    return pd.DataFrame(
        {
            "site_id": sites["id_code"] + "_" + sites["site"].astype(str),
            "well_id": sites["id_code"],
            "cell_type": sites["cell_type"],
            "dataset": sites["split"],
            "experiment": sites["experiment"],
            "plate": sites["plate"],
            "well": sites["well"],
            "site": sites["site"],
            "well_type": sites["well_type"],
            "sirna": [
                "EMPTY" if t == "negative_control" else f"SYN{s:05d}"
                for s, t in zip(sites["sirna"], sites["well_type"], strict=True)
            ],
            "sirna_id": sites["sirna"],
        }
    )
