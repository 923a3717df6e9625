"""Where things are, named once: the checkout the package sits in, the container image.

Dependency-free (``pathlib`` only), so any module, and a caller that only wants a
constant, imports it without loading torch, submitit or the command-line modules.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PROJECT_ROOT", "SIF_ENV"]

# The checkout: the folder above the package, which holds 01_data/ .. 04_ensemble/, runs/.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The environment variable naming the Singularity/Apptainer image (``--sif``'s default).
SIF_ENV = "CELLBLOCK_SIF"
