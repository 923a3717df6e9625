#!/usr/bin/env python
"""View a whole plate of a packed dataset in neuroglancer, headless as a PNG, or as a montage.

Channel names, colours and windows come from the plate's OME-Zarr metadata. --serve
serves the dataset folder over HTTP (CORS, Range) and shows the plate's fields through
neuroglancer's own zarr3:// source instead of the Python mosaic.

Examples:
    python 01_data/view_data.py --data demo/dataset --plate HEPG2-01/Plate1
    python 01_data/view_data.py --data demo/dataset --plate HEPG2-02/Plate1 \\
        --predictions PRED_OR_ENSEMBLE_OUT --screenshot plate.png --montage overview.png
    python 01_data/view_data.py --data demo/dataset --plate HEPG2-01/Plate1 --serve
"""

from cellblock.cli import run
from cellblock.viewer.cli import view_data_main

if __name__ == "__main__":
    run(view_data_main)
