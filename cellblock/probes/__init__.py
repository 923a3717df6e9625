"""Reference probes: the floor (image statistics) and, on synthetic screens, the ceiling
(the cells' true traits) that a CNN's held-out accuracy is read against.

``reference_probes(DATASET, traits=RAW/site_traits.csv)`` runs both; the modules:
``imagestats`` (per-site features), ``reference`` (fit, plate step, scoring), ``run``
(both probes on a dataset; the generator's traits as the oracle's features).
"""

from cellblock.probes.run import reference_probes

__all__ = ["reference_probes"]
