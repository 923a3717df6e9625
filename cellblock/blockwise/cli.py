"""Arguments and entry points of ``03_predict/predict_blockwise.py`` and ``predict_scan.py``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from cellblock.blockwise.plan import Plan, make_plan
from cellblock.cli.values import comma_list, key_values
from cellblock.errors import UserError
from cellblock.paths import Project, add_project_argument
from cellblock.screen.sites import SPLITS
from cellblock.tta import TTA

__all__ = ["blockwise_main", "scan_main"]


def _list(text: str) -> list[str]:
    try:
        return comma_list(text, what="")
    except UserError:
        raise argparse.ArgumentTypeError(f"expected comma-separated values, got {text!r}") from None


def _parser(blockwise: bool) -> argparse.ArgumentParser:
    """The arguments of predict_blockwise.py (``blockwise``) or predict_scan.py.

    Long because one flat list of options reads better than pieces of one.
    """
    what = ("Predict plates blockwise with daisy: persistent workers (one per GPU), logits and "
            "embeddings to PRED/predictions.zarr, resumable (done blocks are skipped)."
            if blockwise else "Predict plates in this one process, without daisy (small data; "
            "the reference of predict_blockwise.py): same inputs, same store.")  # fmt: skip
    p = argparse.ArgumentParser(description=what)
    p.add_argument("--run", required=True, help="run folder (or a checkpoint file)")
    p.add_argument("--iteration", type=int, help="checkpoint iteration (default: the latest)")
    p.add_argument("--data", required=True, help="packed dataset to predict")
    p.add_argument("--split", choices=SPLITS, default="test", help="sites of this split")
    p.add_argument(
        "--experiments",
        type=_list,
        action="extend",
        metavar="EXP[,EXP/PlateN]",
        help="only these experiments or plates (repeatable, comma-separated)",
    )
    p.add_argument("--out", required=True, help="output folder PRED (PRED/predictions.zarr)")
    p.add_argument(
        "--tta",
        choices=tuple(TTA),
        default="none",
        help="test-time augmentation: logits and embeddings averaged over transforms",
    )
    p.add_argument("--batch-size", type=int, default=64, help="sites per forward pass")
    p.add_argument("--setup", help="setup folder or name under the project's 02_train "
                   "(default: the one the run's run.json records)")  # fmt: skip
    p.add_argument(
        "--readers",
        type=int,
        help="threads decoding sites ahead of the network, per worker (default: the CPUs "
        "the worker was given on a GPU, SLURM's allotment or its affinity; 0 on a CPU)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network (one batch shape; compiled once per worker)",
    )
    add_project_argument(p)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete earlier predictions, done markers and worker logs first",
    )
    if not blockwise:
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
        return p
    p.add_argument("--workers", type=int, help="concurrent workers (default: one per GPU, or 1)")
    p.add_argument("--gpus", type=_list, help="GPU ids, one worker pinned to each, e.g. 0,1")
    p.add_argument(
        "--block-wells",
        type=int,
        help="wells per block (default: whole plate rows, at least --batch-size sites; "
        "whole rows when larger than a row)",
    )
    p.add_argument("--cluster", default="local", help="worker launcher: local or slurm")
    p.add_argument(
        "--cluster-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the launcher, e.g. partition=gpu (repeatable)",
    )
    p.add_argument(
        "--sif",
        help="run workers in this Apptainer/Singularity image (--nv); "
        "default: $CELLBLOCK_SIF if set, '' = natively",
    )
    p.add_argument("--host", help="daisy server address (default: 127.0.0.1 for local workers)")
    p.add_argument(
        "--max-restarts",
        type=int,
        help="worker starts allowed beyond --workers (default: max(2, workers))",
    )
    p.add_argument("--block-timeout", type=float, help="seconds a block may take (default 600)")
    p.add_argument("--progress", action="store_true", help="show daisy's progress bar")
    return p


def _plan(args: argparse.Namespace, block_wells: int | None, project: Project | None) -> Plan:
    """The plan of a command line; ``--project`` wins over the caller's ``project``."""
    if args.project or project is None:
        project = Project.locate(args.project)
    return make_plan(
        args.run,
        args.data,
        args.out,
        iteration=args.iteration,
        split=args.split,
        experiments=args.experiments,
        tta=args.tta,
        batch_size=args.batch_size,
        block_wells=block_wells,
        setup=args.setup,
        readers=args.readers,
        compile=args.compile,
        project=project,
    )


def blockwise_main(argv: Sequence[str] | None = None, project: Project | None = None) -> int:
    """``predict_blockwise.py``: exit 0 only if every block is done.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
        project: The project the script belongs to (``--project`` wins); None: located
            from the working directory.
    """
    from cellblock.blockwise.driver import LaunchOptions, predict_blockwise

    launched = time.time()
    args = _parser(blockwise=True).parse_args(argv)
    plan = _plan(args, args.block_wells, project)
    opts = LaunchOptions(
        workers=args.workers,
        gpus=tuple(args.gpus) if args.gpus else None,
        cluster=args.cluster,
        cluster_options=_plain_options(args.cluster_option),
        sif=args.sif,
        host=args.host,
        max_restarts=args.max_restarts,
        block_timeout=args.block_timeout,
        overwrite=args.overwrite,
        progress=args.progress,
    )
    summary = predict_blockwise(plan, opts, launched)
    print(summary.format())
    if not summary.ok:
        print(f"error: {summary.failed} block(s) failed, {summary.not_run} not run; "
              f"see above and {summary.log_dir}", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def scan_main(argv: Sequence[str] | None = None, project: Project | None = None) -> int:
    """``predict_scan.py``.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
        project: As for :func:`blockwise_main`.
    """
    from cellblock.blockwise.scan import predict_scan

    args = _parser(blockwise=False).parse_args(argv)
    result = predict_scan(_plan(args, None, project), args.overwrite, args.device)
    busy = result.sites / result.busy_s if result.busy_s > 0 else 0.0
    print(f"sites: {result.sites} in {result.seconds:.1f} s ({result.sites_per_s:.1f} img/s, "
          f"{busy:.1f} img/s while predicting: {result.busy_s:.2f} s, {result.cpu_s:.2f} CPU s)"
          f"\npredictions: {result.store}")  # fmt: skip
    return 0


def _plain_options(items: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` launcher options as strings (``time=1:00:00`` must stay a string)."""
    return key_values(items, what="--cluster-option")
