#!/usr/bin/env python
"""mAP at scale: activity and consistency mAP of random profiles in RxRx1's layout.

Every experiment holds each of ``--sirnas`` siRNAs once (RxRx1: 1,108, one well a plate
set) and ``--controls`` negative-control wells; profiles are a per-siRNA direction plus
noise. Run under ``/usr/bin/time -v`` for the peak memory::

    /usr/bin/time -v python scripts/bench/mapscale.py --experiments 18   # ~20,000 wells
    python scripts/bench/mapscale.py --experiments 4 --copairs            # copairs' own

``--copairs`` scores with copairs' ``average_precision`` (every pair at once) instead of
``cellblock.profiling.mapscore`` and prints whether the two agree exactly.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from copairs.map import average_precision, mean_average_precision
from copairs.matching import assign_reference_index

from cellblock.profiling.mapscore import LABEL, _pair_rules, copairs_map


def screen(experiments: int, sirnas: int, controls: int, dim: int, seed: int = 0):
    """``(meta, features)`` of a random screen (module docstring)."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.r_[np.arange(sirnas), np.full(controls, sirnas)]] * experiments)
    experiment = np.repeat(np.arange(experiments), sirnas + controls)
    meta = pd.DataFrame(
        {
            LABEL: labels,
            "Metadata_experiment": [f"E{e}" for e in experiment],
            "Metadata_well_type": np.where(labels < sirnas, "treatment", "negative_control"),
        }
    )
    signal = rng.normal(size=(sirnas + 1, dim)) * rng.uniform(0, 0.5, (sirnas + 1, 1))
    return meta, signal[labels] + rng.normal(size=(len(labels), dim))


def copairs_reference(meta: pd.DataFrame, x: np.ndarray, kind: str, null_size: int) -> float:
    """copairs' own pipeline, every pair at once (as mapscore did before blocks)."""
    keep = (meta["Metadata_well_type"] == "treatment") | (kind == "activity")
    frame, x = meta[keep.to_numpy()].reset_index(drop=True), x[keep.to_numpy()]
    if kind == "activity":
        frame = assign_reference_index(
            frame,
            "Metadata_well_type == 'negative_control'",
            reference_col="Metadata_reference_index",
            default_value=-1,
        )
    pos_same, pos_diff, neg_diff = _pair_rules(kind)
    ap = average_precision(
        frame, x, list(pos_same), list(pos_diff), [], list(neg_diff), progress_bar=False
    )
    ap = ap[(ap["Metadata_well_type"] == "treatment") & ap["average_precision"].notna()]
    scores = mean_average_precision(
        ap, [LABEL], null_size=null_size, threshold=0.05, seed=0, progress_bar=False
    )
    return float(scores["mean_average_precision"].mean())


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--experiments", type=int, default=18, help="experiments (18: ~20,000 wells)")
    p.add_argument("--sirnas", type=int, default=1108, help="siRNAs per experiment (1108)")
    p.add_argument("--controls", type=int, default=4, help="negative controls per experiment")
    p.add_argument("--dim", type=int, default=512, help="profile width (512: the default)")
    p.add_argument("--null-size", type=int, default=10000, help="copairs null size (10000)")
    p.add_argument("--copairs", action="store_true", help="also copairs' own pipeline")
    args = p.parse_args()
    meta, x = screen(args.experiments, args.sirnas, args.controls, args.dim)
    print(
        f"{len(meta)} wells ({int((meta['Metadata_well_type'] == 'treatment').sum())} "
        f"treatment), {args.dim} features"
    )
    for kind in ("activity", "consistency"):
        start = time.perf_counter()
        got = copairs_map(meta, x, kind, null_size=args.null_size)
        print(f"{kind}: {got} in {time.perf_counter() - start:.1f} s")
        if args.copairs and got is not None:
            start = time.perf_counter()
            ref = copairs_reference(meta, x, kind, args.null_size)
            print(
                f"  copairs' own: map {ref!r} in {time.perf_counter() - start:.1f} s, "
                f"equal: {ref == got['map']}"
            )


if __name__ == "__main__":
    main()
