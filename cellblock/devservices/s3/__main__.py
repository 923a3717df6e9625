"""``python -m cellblock.devservices.s3``: the command line (its ``cli`` module)."""

import sys

from cellblock.devservices.s3.cli import main

if __name__ == "__main__":
    sys.exit(main())
