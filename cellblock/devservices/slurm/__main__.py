"""``python -m cellblock.devservices.slurm``: the command line (its ``cli`` module)."""

import sys

from cellblock.devservices.slurm.cli import main

if __name__ == "__main__":
    sys.exit(main())
