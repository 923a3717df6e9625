"""``python -m cellblock.s3local``: the command line (``cellblock.s3local.cli``)."""

import sys

from cellblock.s3local.cli import main

if __name__ == "__main__":
    sys.exit(main())
