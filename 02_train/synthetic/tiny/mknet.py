#!/usr/bin/env python
"""Build the network of this setup: summary, parameter count, RUN/net_config.json (--help)."""

from pathlib import Path

from cellblock.cli import run
from cellblock.training.cli import mknet_main

if __name__ == "__main__":
    run(lambda: mknet_main(Path(__file__).resolve().parent))
