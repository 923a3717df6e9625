#!/usr/bin/env python
"""Train this setup up to iteration N, resuming from its run folder (--help)."""

from pathlib import Path

from cellblock.cli import run
from cellblock.training.cli import train_main

if __name__ == "__main__":
    run(lambda: train_main(Path(__file__).resolve().parent))
