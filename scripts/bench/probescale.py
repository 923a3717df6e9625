#!/usr/bin/env python
"""Linear probes at scale: the siRNA probe of random profiles in RxRx1's layout.

The screen of ``scripts/bench/mapscale.py`` (each experiment holds every siRNA once;
profiles: a per-siRNA direction of random strength plus noise); ``linear_probe`` of
each ``--kinds`` probe, its accuracy on held-out experiments and its time::

    /usr/bin/time -v python scripts/bench/probescale.py --experiments 18 --kinds lda
    python scripts/bench/probescale.py --experiments 4 --sirnas 300 --kinds lda,logistic
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mapscale import screen

from cellblock.profiling.probes import PROBES, linear_probe


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--experiments", type=int, default=18, help="experiments (18: ~20,000 wells)")
    p.add_argument("--sirnas", type=int, default=1108, help="siRNAs per experiment (1108)")
    p.add_argument("--dim", type=int, default=512, help="profile width (512: the default)")
    p.add_argument("--kinds", default="lda", help=f"comma-separated probes of {PROBES}")
    args = p.parse_args()
    meta, x = screen(args.experiments, args.sirnas, 4, args.dim)
    print(f"{len(meta)} wells, {args.sirnas} siRNAs, {args.dim} features")
    for kind in args.kinds.split(","):
        start = time.perf_counter()
        got = linear_probe(meta, x, kind=kind)
        print(f"{kind}: {got} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
