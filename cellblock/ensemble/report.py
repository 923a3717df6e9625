"""The ensemble's report: ``report.json``, ``report.md`` and plots.

Plots (written only where they have something to show):

* ``accuracy_per_experiment.png`` / ``accuracy_per_cell_type.png``: accuracy before
  (argmax over all classes, argmax within the plate's group) and after the assignment;
* ``plate_maps.png``: every plate in its plate layout, each used well coloured by
  whether it is right before and after the assignment (with no answer key: by the
  confidence of its assigned label).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display (batch nodes have none)
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap

from cellblock.atomic import atomic_path, atomic_write_text

__all__ = [
    "accuracy_line",
    "map_line",
    "plot_accuracy",
    "plot_plate_maps",
    "write_json",
    "write_markdown",
]

log = logging.getLogger(__name__)
STAGES = (("argmax", "argmax"), ("masked", "group mask"), ("assigned", "assigned"))
# plate-map categories: (name, colour)
CATEGORIES = (
    ("not used", "#ffffff"),
    ("control", "#bdbdbd"),
    ("right before and after", "#2e7d32"),
    ("fixed by assignment", "#64b5f6"),
    ("broken by assignment", "#ff9800"),
    ("wrong", "#d32f2f"),
)


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_accuracy(accuracy: dict[str, Any], by: str, path: Path) -> Path | None:
    """Bars of accuracy per experiment or cell type, one bar per stage.

    Args:
        accuracy: ``report["accuracy"]``: stage -> ``accuracy_breakdown`` (or None).
        by: ``"per_experiment"`` or ``"per_cell_type"``.
        path: The PNG to write.

    Returns:
        ``path``, or None when no stage has labels to plot.
    """
    stages = [(k, t) for k, t in STAGES if accuracy.get(k)]
    if not stages:
        return None
    names = list(accuracy[stages[0][0]][by])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names) * len(stages) / 2 + 2), 3.6))
    width = 0.8 / len(stages)
    x = np.arange(len(names))
    for i, (key, title) in enumerate(stages):
        values = [accuracy[key][by].get(n, np.nan) for n in names]
        ax.bar(
            x + (i - (len(stages) - 1) / 2) * width,
            values,
            width,
            label=f"{title} ({accuracy[key]['overall']:.3f})",
        )
    rotate = len(names) > 6
    ax.set_xticks(x, names, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (treatment wells)")
    ax.set_title("accuracy " + by.replace("_", " ") + ", before and after the plate step")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the bars
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _plate_categories(part: pd.DataFrame, shape: tuple[int, ...]) -> np.ndarray:
    grid = np.zeros(shape, dtype=np.int64)
    for r in part.itertuples():
        if r.well_type != "treatment":
            code = 1
        elif pd.isna(r.truth):
            code = 0
        else:
            before, after = r.argmax == r.truth, r.assigned == r.truth
            code = 2 if before and after else 3 if after else 4 if before else 5
        grid[r.row, r.col] = code
    return grid


def plot_plate_maps(wells: pd.DataFrame, shape: tuple[int, ...], path: Path) -> Path:
    """Every plate in plate layout; wells coloured by correctness (or confidence).

    Args:
        wells: One row per well: ``experiment``, ``plate``, ``row``, ``col``,
            ``well_type``, ``argmax``, ``assigned``, ``confidence``, ``truth`` (NA unknown).
        shape: ``(n_rows, n_cols)`` of the plate format.
        path: The PNG to write.
    """
    plates = sorted(wells.groupby(["experiment", "plate"]).groups)
    labelled = wells["truth"].notna().any()
    ncols = min(8, len(plates))
    nrows = math.ceil(len(plates) / ncols)
    scale = 2.6 / max(shape)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        squeeze=False,
        figsize=(ncols * shape[1] * scale * 1.1, nrows * shape[0] * scale * 1.4),
    )
    cmap = ListedColormap([c for _, c in CATEGORIES])
    for ax, (experiment, plate) in zip(axes.flat, plates, strict=False):
        part = wells[(wells["experiment"] == experiment) & (wells["plate"] == plate)]
        if labelled:
            grid = _plate_categories(part, shape)
            ax.imshow(grid, cmap=cmap, vmin=0, vmax=len(CATEGORIES) - 1)
            treat = part[(part["well_type"] == "treatment") & part["truth"].notna()]
            acc = (treat["assigned"] == treat["truth"]).mean() if len(treat) else float("nan")
            ax.set_title(f"{experiment} P{plate}: {acc:.2f}", fontsize=7)
        else:
            grid = np.full(shape, np.nan)
            grid[part["row"].to_numpy(), part["col"].to_numpy()] = part["confidence"].to_numpy()
            image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"{experiment} P{plate}", fontsize=7)
        # a faint grid: every well of the plate format, used or not
        ax.set_xticks(np.arange(-0.5, shape[1], 1), minor=True)
        ax.set_yticks(np.arange(-0.5, shape[0], 1), minor=True)
        ax.grid(which="minor", color="#d0d0d0", linewidth=0.3)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    for ax in list(axes.flat)[len(plates) :]:
        ax.axis("off")
    if labelled:
        handles = [
            plt.Rectangle((0, 0), 1, 1, facecolor=c, edgecolor="#999999") for _, c in CATEGORIES
        ]
        fig.legend(
            handles,
            [n for n, _ in CATEGORIES],
            loc="lower center",
            ncol=3,
            fontsize=7,
            bbox_to_anchor=(0.5, -0.04),
        )
        fig.suptitle("treatment wells after the plate assignment (vs argmax)", fontsize=9)
    else:
        fig.colorbar(image, ax=axes, shrink=0.6, label="confidence of assigned label")
    return _save(fig, path)


def accuracy_line(report: dict[str, Any], split: str) -> str:
    """The one-line result: accuracy before and after the plate step (or why there is none).

    Args:
        report: What ``run_ensemble`` returned.
        split: The split ensembled.
    """
    acc = report["accuracy"]
    if acc["argmax"] is None:
        return (f"{report['n_scored_wells']} wells of split {split}: no answer key, "
                "accuracy not computed")  # fmt: skip
    argmax = acc["argmax"]
    line = (
        f"accuracy, {split} split ({len(report['experiments'])} experiments, "
        f"{argmax['n']} treatment wells): argmax {argmax['overall']:.4f}"
    )
    if acc.get("assigned"):
        line += f" -> assigned {acc['assigned']['overall']:.4f}"
    return line


def map_line(report: dict[str, Any]) -> str:
    """The profiles' copairs mAP in one line (activity, consistency), or why there is none.

    Args:
        report: What ``run_ensemble`` returned.
    """
    scores = report.get("profiles", {}).get("map", {})
    parts = [
        f"{kind} {s['map']:.4f} ({s['fraction_significant']:.0%} significant)"
        for kind in ("activity", "consistency")
        if (s := scores.get(kind))
    ]
    if not parts:
        return "profiles: no answer key for these wells, copairs mAP not computed"
    return f"profiles ({report['profiles']['align']}): copairs mAP " + ", ".join(parts)


def write_json(report: dict[str, Any], path: Path) -> Path:
    """``report.json`` (atomic, sorted keys for stable diffs)."""
    atomic_write_text(path, json.dumps(report, indent=2, sort_keys=True) + "\n")
    return path


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def write_markdown(report: dict[str, Any], path: Path) -> Path:
    """``report.md``: the headline numbers, tables per cell type and experiment, plots.

    Args:
        report: The report dict (as written to ``report.json``).
        path: The markdown file to write.
    """
    lines = [
        "# Ensemble report",
        "",
        f"- dataset: `{report['dataset']}`, split `{report['split']}`, "
        f"{report['n_wells']} wells ({report['n_scored_wells']} treatment wells scored)",
        f"- combine: `{report['combine']}` over {len(report['inputs'])} prediction store(s)",
        f"- plate step: {report['plate_step']}",
        f"- submission: `{report['outputs']['submission']}`",
        "",
    ]
    lines += _accuracy_lines(report["accuracy"])
    groups = report.get("groups")
    if groups:
        lines += [
            "## Plate groups",
            "",
            f"{groups['n_groups']} treatment groups learned from the training plates; "
            f"smallest margin {_fmt(groups['min_margin'])}; detection accuracy "
            f"{_fmt(groups.get('detection_accuracy'))}.",
            "",
        ]
    if report.get("profiles"):
        lines += _profile_lines(report["profiles"], report["outputs"]["profiles"])
    lines += ["## Inputs", ""]
    for item in report["inputs"]:
        lines.append(
            f"- `{item['path']}` weight {item['weight']:.3f}: {item['setup']} "
            f"iteration {item['iteration']}, tta {item['tta']}, channels "
            f"{','.join(map(str, item['channels']))}"
        )
    plots = [p for p in report["outputs"].get("plots", []) if p]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _accuracy_lines(acc: dict[str, Any]) -> list[str]:
    """The accuracy table of ``report.md``: a column per stage, a row per group of wells."""
    stages = [(k, t) for k, t in STAGES if acc.get(k)]
    if not stages:
        return ["No answer key for these wells: accuracy not computed.", ""]
    lines = [
        "## Accuracy (treatment wells)",
        "",
        "| | n | " + " | ".join(t for _, t in stages) + " |",
        "|---|---:|" + "---:|" * len(stages),
    ]
    first = acc[stages[0][0]]
    overall = " | ".join(f"**{acc[k]['overall']:.4f}**" for k, _ in stages)
    lines.append(f"| **overall** | {first['n']} | {overall} |")
    for section in ("per_cell_type", "per_experiment"):
        for name, n in first["n_" + section].items():
            values = " | ".join(_fmt(acc[k][section].get(name)) for k, _ in stages)
            lines.append(f"| {name} | {n} | {values} |")
    return [*lines, ""]


def _profile_lines(profiles: dict[str, Any], table: str) -> list[str]:
    """The profiles section of ``report.md`` (``table``: profiles.parquet's path)."""
    lines = [
        "## Profiles",
        "",
        f"`{table}`: {profiles['n_wells']} wells of every "
        f"predicted plate, {profiles['profile_dim']} features, aligned `{profiles['align']}`.",
        "copairs mAP of this split's treatment wells (answer key joined for scoring only):",
        "",
        "| | mAP | significant (FDR 5%) |",
        "|---|---:|---:|",
    ]
    for kind, meaning in (("activity", "activity vs negative controls"),
                          ("consistency", "consistency across experiments")):  # fmt: skip
        score = profiles.get("map", {}).get(kind)
        values = f"{score['map']:.4f} | {score['fraction_significant']:.2f}" if score else "- | -"
        lines.append(f"| {meaning} | {values} |")
    return [*lines, ""]
