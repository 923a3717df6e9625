#!/usr/bin/env python
"""View a training batch snapshot (RUN/snapshots/batch_N.hdf) in neuroglancer (--help)."""

from cellblock.cli import run
from cellblock.viewer.cli import view_batch_main

if __name__ == "__main__":
    run(view_batch_main)
