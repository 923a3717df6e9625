#!/usr/bin/env python
"""Predict plates blockwise with daisy: persistent workers, resumable (--help)."""

from cellblock.blockwise.cli import blockwise_main
from cellblock.cli import run

if __name__ == "__main__":
    run(blockwise_main)
