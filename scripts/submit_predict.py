#!/usr/bin/env python
"""Submit 03_predict/predict_blockwise.py itself as a SLURM job (--help).

    submit_predict.py --partition cpu --time 4:00:00 --mem 8G --wait -- \\
        --run runs/rxrx1/densenet/fold_0 --data data/rxrx1 --out pred/densenet_f0 \\
        --cluster slurm --workers 8 --cluster-option partition=gpu --cluster-option gpus=1

Options before ``--`` are the driver job's; everything after it goes to
predict_blockwise.py unchanged. With ``--cluster slurm`` there, every worker is a job of
its own, cancelled when the driver ends (also when the driver's job is scancelled).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path

from cellblock.cli import run, writing
from cellblock.cluster import add_arguments, cancel_on_exit, from_args, make_executor, outcomes
from cellblock.cluster.jobs import submit_command
from cellblock.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "03_predict" / "predict_blockwise.py"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        usage="%(prog)s [driver job options] [--wait] -- PREDICT_BLOCKWISE_ARGS...",
        description="Run the blockwise prediction driver (03_predict/predict_blockwise.py) as "
        "a job. Its files go to PRED/logs/driver/<time>/ (PRED: the --out after --); the job "
        "id and its log are printed. The driver runs natively: give --sif after -- to run "
        "the workers in an image.",
    )
    p.add_argument("--wait", action="store_true",
                   help="wait for the driver and exit with its status (Ctrl-C cancels it "
                        "and its workers)")  # fmt: skip
    add_arguments(p)
    p.set_defaults(job_name="cellblock-predict-driver", time="24:00:00")
    return p


def _out_of(predict_args: list[str]) -> Path:
    """The ``--out`` of the driver's arguments (its folder holds the driver's job files)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--out")
    p.add_argument("-h", "--help", action="store_true")
    known, _ = p.parse_known_args(predict_args)
    if known.help:
        raise UserError(f"for predict_blockwise.py's options run: {DRIVER} --help")
    if not known.out:
        raise UserError("give predict_blockwise.py's arguments after --, with --out PRED")
    return Path(known.out).absolute()


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = _parser().parse_args(argv[:split])
    predict_args = argv[split + 1 :]
    if args.sif:
        raise UserError("--sif: the driver runs natively; put --sif after -- (the workers')")
    out = _out_of(predict_args)
    options = dataclasses.replace(from_args(args), sif="")  # not $CELLBLOCK_SIF either
    folder = out / "logs" / "driver" / time.strftime("%Y%m%d-%H%M%S")
    command = [sys.executable, str(DRIVER), *predict_args]
    with writing(folder):  # the job's script and pickles
        executor = make_executor(args.cluster, folder, options)
        # The driver's stdout (the summary) is its job's .out file; unbuffered so it is live.
        job = submit_command(executor, command, {"PYTHONUNBUFFERED": "1"}, cwd=os.getcwd())
    print(f"submitted the driver as job {job.job_id}: {shlex.join(command)}")
    print(f"log: {job.paths.stdout} (errors and progress: {job.paths.stderr})")
    if not args.wait:
        return 0
    with cancel_on_exit([job]):
        outcome = outcomes([job])[0]
    if outcome.ok:
        print(f"job {job.job_id} completed; predictions: {out / 'predictions.zarr'}")
        return 0
    print(f"job {job.job_id} failed: {outcome.value.strip().splitlines()[-1]}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    run(main)
