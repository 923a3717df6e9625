#!/usr/bin/env python
"""Train a grid of folds x channel subsets of one setup as one array job (--help).

    submit_train.py --setup 02_train/rxrx1/densenet --folds 0-4 --channel-sets leave-one-out \\
        --data data/rxrx1 --cluster slurm --partition gpu --gpus 1 --cpus 8 --time 12:00:00
    submit_train.py --setup 02_train/rxrx1/densenet121 --init-from runs/rxrx1/controls_pretrain ...
    submit_train.py status --setup 02_train/rxrx1/densenet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellblock.cli import parse_overrides, run, writing
from cellblock.cluster import add_arguments, from_args
from cellblock.cluster.grid import default_out, load_manifest, make_grid, setup_folder
from cellblock.cluster.grid_jobs import format_status, grid_status, submit_grid
from cellblock.paths import Project, add_project_argument


def _submit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train every (fold, channel subset) of a setup: one SLURM array job, each "
        "task train.py into GRID/ch<channels>/fold_<k> (preemption-safe: checkpoint, requeue, "
        "resume). Submitting again resumes unfinished runs. "
        "'submit_train.py status ...' shows the grid's state.",
    )
    p.add_argument("--setup", required=True, help="setup folder, e.g. 02_train/synthetic/tiny")
    p.add_argument("--folds", default="0-4", help="validation folds: 0-4, 0,2 ... (0-4)")
    p.add_argument("--channel-sets", default="all",
                   help="all | leave-one-out | '1,2,3;4,5,6' (all)")  # fmt: skip
    p.add_argument("--data", help="packed dataset (default: the grid's, from grid.json)")
    p.add_argument("--out", help="grid folder (default: runs/<dataset>/<setup>)")
    p.add_argument("--iterations", type=int, help="iteration to reach (train.schedule_iters)")
    p.add_argument(
        "--init-from",
        metavar="RUN|CHECKPOINT|GRID",
        help="start new runs from these weights (stage I -> II): a run folder or checkpoint "
        "for every run, or a grid folder: each run from its run of the same channels (and "
        "fold, if it has several); default: the grid's, if any",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="config override for every run, e.g. train.lr=0.01 (repeatable)",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="slurm: wait for every task and report (local/debug always wait)",
    )
    add_project_argument(p)
    add_arguments(p)
    return p


def _status_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="submit_train.py status",
        description="Per run of a grid: its folder, latest checkpoint iteration, job and state.",
    )
    p.add_argument("--setup", help="setup folder (its default grid folder)")
    p.add_argument("--out", help="grid folder")
    add_project_argument(p)
    return p


def status_main(argv: list[str]) -> int:
    args = _status_parser().parse_args(argv)
    if not args.setup and not args.out:
        _status_parser().error("give --setup or --out")
    project = Project.locate(args.project, start=__file__)
    out = Path(args.out) if args.out else default_out(setup_folder(args.setup, project), project)
    load_manifest(out)  # a clear error if there is no grid
    print(format_status(grid_status(out)))
    return 0


def submit_main(argv: list[str]) -> int:
    args = _submit_parser().parse_args(argv)
    project = Project.locate(args.project, start=__file__)
    grid = make_grid(
        args.setup,
        folds=args.folds,
        channel_sets=args.channel_sets,
        data=args.data,
        out=args.out,
        iterations=args.iterations,
        overrides=parse_overrides(args.set),
        init_from=args.init_from,
        project=project,
    )
    with writing(grid.out):  # grid.json, the runs' folders and job files
        submission, results = submit_grid(grid, args.cluster, from_args(args), wait=args.wait)
    if submission is None:
        print(f"{grid.out}: all {len(grid.runs())} runs are at iteration {grid.iterations}")
        return 0
    if results is None:
        first = next(iter(submission["jobs"].values())).split("_")[0]
        print(f"submitted {len(submission['jobs'])} runs as job {first}; "
              f"state: {Path(sys.argv[0]).name} status --out {grid.out}")  # fmt: skip
        return 0
    failed = [o for o in results if not o.ok]
    for o in failed:
        print(f"job {o.job_id} failed: {o.value.splitlines()[0] if o.value else ''}",
              file=sys.stderr)  # fmt: skip
    print(format_status(grid_status(grid.out)))
    return 1 if failed else 0


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["status"]:
        return status_main(argv[1:])
    return submit_main(argv)


if __name__ == "__main__":
    run(main)
