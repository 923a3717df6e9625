#!/usr/bin/env python
"""View a whole plate of a packed dataset in neuroglancer, headless as a PNG, or as a montage.

Examples:
    python 01_data/view_data.py --data demo/dataset --plate HEPG2-01/Plate1
    python 01_data/view_data.py --data demo/dataset --plate HEPG2-02/Plate1 \\
        --predictions PRED_OR_ENSEMBLE_OUT --screenshot plate.png --montage overview.png
"""

from cellblock.cli import run
from cellblock.viewer.cli import view_data_main

if __name__ == "__main__":
    run(view_data_main)
