"""``predict_scan``: the same prediction in one process, without daisy.

For small data, and the reference the blockwise path is tested and benchmarked
against: the same plan, store, ``Predictor`` and ``write_wells``, one plate after
another (every selected well of a plate in one ``predict_wells`` call).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from cellblock.blockwise.output import driver_lock, prepare_output
from cellblock.blockwise.plan import Plan
from cellblock.inference import Predictor
from cellblock.screen.plates import parse_plate_key
from cellblock.store.packed import PackedDataset
from cellblock.store.predictions import write_wells

__all__ = ["ScanResult", "predict_scan"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanResult:
    """Sites predicted, wall time (model load included), prediction time and CPU, the store."""

    sites: int
    seconds: float
    busy_s: float
    cpu_s: float
    store: str

    @property
    def sites_per_s(self) -> float:
        return self.sites / self.seconds if self.seconds > 0 else 0.0


def predict_scan(plan: Plan, overwrite: bool = False, device: str = "auto") -> ScanResult:
    """Predict every selected well of ``plan`` in this process.

    Args:
        plan: From ``make_plan``.
        overwrite: Start afresh (see ``prepare_output``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
    """
    start = time.time()
    with driver_lock(plan):
        store = prepare_output(plan, overwrite)
        predictor = Predictor(
            plan.checkpoint,
            PackedDataset(plan.dataset),
            plan.tta,
            plan.batch_size,
            device=device,
            readers=plan.readers,
            stats_dir=plan.stats_dir,
            compile=plan.compile,
        )
        busy, cpu = time.time(), time.process_time()
        for i, key in enumerate(plan.grid.plates):
            wells = [(row, col) for row, col, _ in plan.grid.wells[key]]
            experiment, plate = parse_plate_key(key)
            logits, embeddings = predictor.predict_wells(experiment, plate, wells)
            write_wells(store, key, wells, logits, embeddings)
            log.info("%d/%d %s: %d wells", i + 1, len(plan.grid.plates), key, len(wells))
        end, cpu = time.time(), time.process_time() - cpu
        predictor.close()
    return ScanResult(plan.grid.n_sites, end - start, end - busy, cpu, str(store))
