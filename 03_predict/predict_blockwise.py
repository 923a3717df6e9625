#!/usr/bin/env python
"""Predict plates blockwise with daisy: persistent workers, resumable (--help)."""

import sys

from cellblock.blockwise.cli import blockwise_main
from cellblock.cli import option_value, run, writing
from cellblock.paths import Project


def main() -> int:
    """``blockwise_main``, naming ``--out`` in an OSError that names no file (disk full)."""
    with writing(option_value(sys.argv[1:], "--out")):
        return blockwise_main(project=Project.locate(start=__file__))


if __name__ == "__main__":
    run(main)
