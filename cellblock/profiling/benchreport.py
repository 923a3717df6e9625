"""The benchmark's outputs: ``benchmark.json``, ``benchmark.md`` and a polar plot.

The plot (``benchmark.png``) draws one polygon per model over axes scaled to 0-1 with
higher better, as AllenCell's benchmarking_representations compares models:

* activity mAP, consistency mAP, siRNA probe accuracy, relationship recall: as they are;
* batch removal (experiment, plate): ``1 - (accuracy - chance) / (1 - chance)`` of the
  batch probe, clipped: 1 = the probe does no better than the majority class;
* rotation invariance: the mean cosine, clipped at 0;
* compactness: ``1 - log(ID) / log(D)`` of the TwoNN dimension ID of D-wide profiles.

A metric a model lacks (no answer key, no relationship table, run not reachable) is
drawn at 0 (its axis says "not measured" when no model has it) and shown as "-" in the
table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display (batch nodes have none)
import matplotlib.pyplot as plt
import numpy as np

from cellblock.atomic import atomic_path, atomic_write_text

__all__ = ["AXES", "axis_scores", "headline", "plot_polar", "write_json", "write_markdown"]

AXES = ("activity mAP", "consistency mAP", "siRNA probe", "batch removal (experiment)",
        "batch removal (plate)", "rotation invariance", "compactness",
        "relationship recall")  # fmt: skip


def _get(model: dict[str, Any], *keys: str) -> float | None:
    value: Any = model
    for key in keys:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return float(value)


def _removal(probe: dict[str, Any] | None) -> float | None:
    if not probe:
        return None
    excess = (probe["accuracy"] - probe["chance"]) / max(1e-12, 1.0 - probe["chance"])
    return float(np.clip(1.0 - excess, 0.0, 1.0))


def axis_scores(model: dict[str, Any]) -> dict[str, float | None]:
    """A model's score on each polar axis (0-1, higher better; None: not measured).

    Args:
        model: One entry of ``benchmark["models"]``.
    """
    dim, width = model.get("intrinsic_dimension"), model.get("profile_dim", 0)
    compact = None
    if dim is not None and width > 1:
        compact = float(np.clip(1.0 - math.log(max(dim, 1.0)) / math.log(width), 0.0, 1.0))
    rotation = _get(model, "rotation", "mean_cosine")
    return dict(zip(AXES, (
        _get(model, "activity", "map"),
        _get(model, "consistency", "map"),
        _get(model, "linear_probe", "accuracy"),
        _removal((model.get("batch") or {}).get("experiment")),
        _removal((model.get("batch") or {}).get("plate")),
        None if rotation is None else max(0.0, rotation),
        compact,
        _get(model, "relationships", "recall"),
    ), strict=True))  # fmt: skip


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def headline(model: dict[str, Any]) -> str:
    """One line: activity and consistency mAP, probe accuracy, recall.

    Args:
        model: One entry of ``benchmark["models"]``.
    """
    recall = model.get("relationships") or {}
    return (f"activity mAP {_fmt(_get(model, 'activity', 'map'))}, consistency mAP "
            f"{_fmt(_get(model, 'consistency', 'map'))}, siRNA probe "
            f"{_fmt(_get(model, 'linear_probe', 'accuracy'))}, relationship recall "
            f"{_fmt(recall.get('recall'))} (random {_fmt(recall.get('random_rate'))})")  # fmt: skip


# (label, how to read it, value getter)
ROWS = (
    ("activity mAP", "copairs mAP of replicate wells vs negative controls",
     lambda m: _fmt(_get(m, "activity", "map"))),
    ("activity significant", "share of siRNAs active (FDR 5%)",
     lambda m: _fmt(_get(m, "activity", "fraction_significant"), 2)),
    ("consistency mAP", "copairs mAP of an siRNA's wells in other experiments",
     lambda m: _fmt(_get(m, "consistency", "map"))),
    ("consistency significant", "share of siRNAs consistent (FDR 5%)",
     lambda m: _fmt(_get(m, "consistency", "fraction_significant"), 2)),
    ("siRNA probe", "linear-probe accuracy on held-out experiments (chance in brackets)",
     lambda m: _with_chance(m.get("linear_probe"))),
    ("batch: experiment", "probe accuracy for the experiment, lower is better",
     lambda m: _with_chance((m.get("batch") or {}).get("experiment"))),
    ("batch: plate", "probe accuracy for the plate (control wells), lower is better",
     lambda m: _with_chance((m.get("batch") or {}).get("plate"))),
    ("rotation invariance", "mean cosine of an embedding under the D4 views",
     lambda m: _fmt(_get(m, "rotation", "mean_cosine"))),
    ("intrinsic dimension", "TwoNN estimate, lower = more compact",
     lambda m: _fmt(m.get("intrinsic_dimension"), 1)),
    ("relationship recall", "known pairs in the 5%/95% tails of random pairs",
     lambda m: _recall(m.get("relationships"))),
)  # fmt: skip


def _with_chance(probe: dict[str, Any] | None) -> str:
    return "-" if not probe else f"{probe['accuracy']:.3f} ({probe['chance']:.3f})"


def _recall(result: dict[str, Any] | None) -> str:
    if not result:
        return "-"
    return f"{result['recall']:.3f} (random {result['random_rate']:.3f}, {result['n_pairs']} pairs)"


def write_markdown(bench: dict[str, Any], path: Path) -> Path:
    """``benchmark.md``: one row per metric, one column per model, and the plot.

    Args:
        bench: The benchmark dict.
        path: The markdown file to write.
    """
    models = bench["models"]
    lines = [
        "# Representation benchmark",
        "",
        f"- dataset: `{bench['dataset']}`, split `{bench['split']}`",
        f"- relationships: `{bench['relationships']}`" if bench["relationships"] else
        "- relationships: none given",
        "",
        "| metric | " + " | ".join(m["name"] for m in models) + " | meaning |",
        "|---|" + "---:|" * len(models) + "---|",
        "| wells, profile width, alignment | "
        + " | ".join(f"{m['n_wells']}, {m['profile_dim']}, {m['align']}" for m in models)
        + " | |",
    ]  # fmt: skip
    for label, meaning, get in ROWS:
        lines.append(f"| {label} | " + " | ".join(get(m) for m in models) + f" | {meaning} |")
    lines += ["", "![benchmark](benchmark.png)", ""]
    atomic_write_text(path, "\n".join(lines))
    return path


def plot_polar(bench: dict[str, Any], path: Path) -> Path:
    """``benchmark.png``: every model's axis scores on one polar plot.

    Args:
        bench: The benchmark dict.
        path: The PNG to write.
    """
    angles = np.linspace(0.0, 2 * np.pi, len(AXES), endpoint=False)
    closed = np.append(angles, angles[0])
    fig, ax = plt.subplots(figsize=(7.0, 6.0), subplot_kw={"projection": "polar"})
    measured = set()
    for model in bench["models"]:
        scores = axis_scores(model)
        measured |= {a for a in AXES if scores[a] is not None}
        values = [0.0 if (score := scores[a]) is None else score for a in AXES]
        ax.plot(closed, values + values[:1], linewidth=1.8, label=model["name"])
        ax.fill(closed, values + values[:1], alpha=0.12)
    labels = [a.replace(" (", "\n(") + ("" if a in measured else "\n(not measured)") for a in AXES]
    ax.set_xticks(angles, labels, fontsize=8)
    ax.tick_params(axis="x", pad=12)
    ax.set_ylim(0.0, 1.0)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0], ["0.25", "0.5", "0.75", "1"], fontsize=7)
    ax.set_title(f"representation benchmark, {bench['split']} split (higher is better)",
                 fontsize=10, pad=18)  # fmt: skip
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.12), fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def write_json(bench: dict[str, Any], path: Path) -> Path:
    """``benchmark.json`` (atomic, sorted keys).

    Args:
        bench: The benchmark dict.
        path: The file to write.
    """
    atomic_write_text(path, json.dumps(bench, indent=2, sort_keys=True) + "\n")
    return path
