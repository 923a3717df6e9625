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

Nothing is imported here: ``table`` and ``align`` need no torch (the ensemble reads
profiles), ``rotation`` (so ``benchmark``) runs the model.
"""
