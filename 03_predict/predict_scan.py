#!/usr/bin/env python
"""Predict plates in one process without daisy: the reference of predict_blockwise (--help)."""

import sys

from cellblock.blockwise.cli import scan_main
from cellblock.cli import option_value, run, writing
from cellblock.paths import Project


def main() -> int:
    """``scan_main``, naming ``--out`` in an OSError that names no file (disk full)."""
    with writing(option_value(sys.argv[1:], "--out")):
        return scan_main(project=Project.locate(start=__file__))


if __name__ == "__main__":
    run(main)
