#!/usr/bin/env python
"""The daisy worker of this setup, started by 03_predict/predict_blockwise.py (--help)."""

from pathlib import Path

from cellblock.blockwise.worker import worker_main
from cellblock.cli import run

if __name__ == "__main__":
    run(lambda: worker_main(Path(__file__).resolve().parent))
