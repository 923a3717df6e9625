"""``python -m cellblock.slurmlocal``: the command line (``cellblock.slurmlocal.cli``)."""

import sys

from cellblock.slurmlocal.cli import main

if __name__ == "__main__":
    sys.exit(main())
