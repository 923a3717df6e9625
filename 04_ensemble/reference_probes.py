#!/usr/bin/env python
"""Reference probes: what a linear model reaches on the held-out treatment wells.

The image-statistics probe (84 per-channel statistics per site, per-plate normalized,
wells averaged, a linear probe fitted on the training experiments) is the floor a
CNN should clear; on a synthetic screen, --traits RAW/site_traits.csv adds the oracle
probe on the cells' true traits, the ceiling the phenotypes allow. Each is reported as
ensemble.py reports a model: argmax, masked to the plate's detected treatment group,
and after the per-plate assignment, on treatment wells only (what Kaggle scores).

With --ensemble OUT (an ensemble.py output folder of the same split) the model's own
row goes beside the probes, and the last line compares them after the assignment.

Example:
    python 04_ensemble/reference_probes.py --data demo/dataset --traits demo/raw/site_traits.csv \\
        --ensemble demo/ensemble --out demo/probes
"""

import argparse
import contextlib
import json
from pathlib import Path

from cellblock.atomic import atomic_write_text
from cellblock.cli import run, writing
from cellblock.finished import output_folder
from cellblock.probes import reference_probes
from cellblock.probes.run import ensemble_accuracy
from cellblock.profiling.probes import PROBES


def _cell(acc: dict | None) -> str:
    return "-" if acc is None else f"{acc['overall']:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="packed dataset (with the answer key to score)")
    p.add_argument("--traits", help="a synthetic screen's site_traits.csv: adds the oracle probe")
    p.add_argument("--split", default="test", choices=["test", "train"],
                   help="split scored (default: test, experiments a CNN never saw)")  # fmt: skip
    p.add_argument("--ensemble", metavar="OUT",
                   help="an ensemble.py output folder: its accuracy beside the probes")  # fmt: skip
    p.add_argument("--out", help="folder for probes.json and probes.md (default: print only)")
    p.add_argument("--workers", type=int, default=1, help="processes for the image statistics")
    p.add_argument(
        "--probe",
        choices=PROBES,
        default="lda",
        help="lda (default: closed form, linear in the wells) or the former logistic regression",
    )
    args = p.parse_args()
    with contextlib.ExitStack() as stack:
        if args.out:  # one writer from the start; an earlier run's probes.* cleared
            stack.enter_context(writing(args.out))
            stack.enter_context(output_folder(args.out, "probes", ("probes.json", "probes.md")))
        _probes(args)


def _probes(args: argparse.Namespace) -> None:
    report = reference_probes(
        args.data, args.traits, args.split, args.workers, progress=True, kind=args.probe
    )
    lines = ["| held-out treatment wells | argmax | masked | assigned | features | seconds |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    rows = {f"{name} probe": probe for name, probe in report["probes"].items()}
    if args.ensemble:
        rows = {"model (ensemble)": {"accuracy": ensemble_accuracy(args.ensemble)}, **rows}
    for name, row in rows.items():
        acc = row["accuracy"]
        cells = [_cell(acc.get(k)) for k in ("argmax", "masked", "assigned")]
        lines.append(f"| {name} | {' | '.join(cells)} | {row.get('n_features', '-')} | "
                     f"{row.get('seconds', '-')} |")  # fmt: skip
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        atomic_write_text(out / "probes.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(out / "probes.md", "\n".join(lines) + "\n")
        print(f"wrote {out / 'probes.json'} and probes.md")
    print(
        "held-out treatment wells, assigned: "
        + ", ".join(
            f"{name} {_cell(row['accuracy'].get('assigned'))}" for name, row in rows.items()
        )
    )


if __name__ == "__main__":
    run(main)
