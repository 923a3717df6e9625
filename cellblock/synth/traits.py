"""Morphological traits of synthetic cells, and each cell type's base morphology.

Every trait is a positive quantity; a cell's value is ``base * exp(z)`` with ``z``
drawn around the site's mean log shift (treatment phenotype + experiment drift)
with the cell-to-cell std of the config. siRNA phenotypes move a few traits; batch
effects move intensities (in the renderer) far more than phenotypes do.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BASE", "CHANNELS", "N_TRAITS", "TRAITS", "trait_index"]

# RxRx1's six stains, in channel order w1..w6, with the compartment each shows.
CHANNELS = (
    ("Hoechst", "nucleus"),
    ("ConA", "endoplasmic reticulum"),
    ("Phalloidin", "actin"),
    ("Syto14", "nucleoli / cytoplasmic RNA"),
    ("MitoTracker", "mitochondria"),
    ("WGA", "Golgi / plasma membrane"),
)

TRAITS = (
    "cell_radius",  # px at 512 px field size
    "elongation",  # cell aspect ratio (>= 1 after clipping)
    "nucleus_ratio",  # nucleus radius / cell radius
    "density",  # cells per site, relative
    "int_nucleus",
    "int_er",
    "int_actin",
    "int_rna",
    "int_mito",
    "int_golgi",  # stain levels
    "nucleus_texture",  # chromatin granularity
    "er_texture",  # ER reticulation contrast
    "actin_fibers",  # stress-fibre strength
    "nucleoli",  # nucleoli per nucleus
    "mito_puncta",  # mitochondrial punctateness
    "golgi_size",  # Golgi blob size / nucleus radius
    "membrane",  # membrane-edge contrast of WGA
)
N_TRAITS = len(TRAITS)


def trait_index(name: str) -> int:
    return TRAITS.index(name)


# Base morphology per cell type, in TRAITS order. Chosen so the four types look
# different at a glance: HEPG2 small, round, crowded; HUVEC long and thin with
# strong actin; RPE large, flat, epithelial with a strong membrane; U2OS big nuclei
# with many nucleoli.
# fmt: off
BASE = {
    #          radius elong nuc_r dens  nucl  er   actin rna  mito golgi ntex etex fibr nclo punc gsz  memb
    "HEPG2": np.array([19, 1.15, 0.55, 1.9, 1.1, 0.8, 0.5, 0.8, 1.0, 0.6, 0.5, 0.5, 0.2, 3.0, 0.6, 0.35, 0.5]),
    "HUVEC": np.array([30, 2.3, 0.38, 0.9, 0.9, 1.0, 1.0, 0.6, 0.8, 0.8, 0.3, 0.7, 0.8, 2.0, 0.4, 0.45, 0.6]),
    "RPE":   np.array([36, 1.3, 0.33, 0.65, 0.8, 0.9, 0.7, 0.7, 0.9, 1.0, 0.4, 0.4, 0.5, 2.5, 0.5, 0.4, 1.0]),
    "U2OS":  np.array([28, 1.5, 0.52, 1.0, 1.0, 0.7, 0.8, 1.1, 0.7, 0.7, 0.6, 0.6, 0.6, 5.0, 0.7, 0.5, 0.7]),
}
# fmt: on
assert all(len(v) == N_TRAITS for v in BASE.values())
