#!/usr/bin/env python
"""Predict plates in one process without daisy: the reference of predict_blockwise (--help)."""

from cellblock.blockwise.cli import scan_main
from cellblock.cli import run

if __name__ == "__main__":
    run(scan_main)
