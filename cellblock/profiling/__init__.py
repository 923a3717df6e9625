"""Well profiles in the image-based profiling convention, and a representation benchmark.

Modules, one concept each:

* ``table``: per-well profiles from predictions stores (``Metadata_*`` + ``Cells_CNN_*``);
* ``align``: plate centring, control standardization, typical variation normalization;
* ``mapscore``: copairs mAP (phenotypic activity, consistency across experiments);
* ``probes``: linear probes (siRNA on held-out experiments; residual batch effect);
* ``rotation``: embedding similarity under the D4 transforms;
* ``geometry``: intrinsic dimension (compactness);
* ``relations``: known-relationship recall (EFAAR-style);
* ``benchmark``: all of them per model; ``benchreport``: json, markdown, polar plot.
"""

from cellblock.profiling.align import ALIGNMENTS, DEFAULT_ALIGN, align_profiles
from cellblock.profiling.benchmark import run_benchmark
from cellblock.profiling.table import (
    PREFIX,
    aligned_table,
    answer_key,
    profile_table,
    public_labels,
    read_well_embeddings,
)

__all__ = [
    "ALIGNMENTS",
    "DEFAULT_ALIGN",
    "PREFIX",
    "align_profiles",
    "aligned_table",
    "answer_key",
    "profile_table",
    "public_labels",
    "read_well_embeddings",
    "run_benchmark",
]
