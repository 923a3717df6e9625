"""The output folder ``PRED`` of a prediction: created, resumed, or started afresh.

    PRED/predictions.zarr          the store (cellblock.store.predictions)
    PRED/bnstats/                  per-plate BatchNorm statistics (cellblock.nets.bnstats)
    PRED/logs/worker_{id}.log      each worker's stdout and stderr
    PRED/logs/daisy/               daisy's own per-slot logs (the launchers' output)
    PRED/blockwise/plan.json       what the workers read
    PRED/blockwise/tracking/       daisy's done markers, one folder per block layout
    PRED/blockwise/blocks.jsonl    one line per finished block (all runs)
    PRED/blockwise/failures/       one record per failed block of the current run

A rerun resumes only predictions of the same run, checkpoint iteration and TTA (a
store holding another model's predictions is refused unless ``overwrite``); a store
created anew drops stale done markers with it, so a marker never vouches for a chunk
that is not there. ``PRED`` may be a folder with other things in it (e.g. the run
folder): only the paths above are ever deleted.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from cellblock.blockwise.plan import Plan
from cellblock.errors import UserError
from cellblock.locks import hold
from cellblock.store.packed import PackedDataset
from cellblock.store.predictions import create_store, open_info

__all__ = ["driver_lock", "prepare_output"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def driver_lock(plan: Plan) -> Iterator[None]:
    """Hold ``PRED/blockwise/driver.lock``: one driver per output folder at a time.

    Raises:
        FolderBusyError: Another driver holds it (the message names its host and pid).
    """
    with hold(plan.state_dir / "driver.lock", what=f"prediction output {plan.out}"):
        yield


def _check_provenance(plan: Plan) -> None:
    old = open_info(plan.store)
    new = plan.info
    for key in ("run", "iteration", "tta", "setup"):
        if getattr(old, key) != getattr(new, key):
            raise UserError(
                f"{plan.store} holds predictions of {old.run} iteration {old.iteration} "
                f"(TTA {old.tta}); this is {new.run} iteration {new.iteration} (TTA {new.tta}): "
                "use --overwrite to replace them, or another --out"
            )


def prepare_output(plan: Plan, overwrite: bool = False) -> Path:
    """Create or reopen the store of ``plan``; clear this run's failure records.

    Args:
        plan: The validated plan.
        overwrite: Delete earlier predictions, done markers, records and worker logs.

    Returns:
        The store path.

    Raises:
        UserError: The store holds predictions of another model (and not ``overwrite``),
            or another class list, embedding width, dataset or channels.
    """
    state, logs = plan.state_dir, plan.log_dir
    if overwrite:
        for path in (state / "tracking", state / "failures", logs / "daisy", plan.stats_dir):
            shutil.rmtree(path, ignore_errors=True)
        (state / "blocks.jsonl").unlink(missing_ok=True)
        for path in logs.glob("worker_*.log"):
            path.unlink()
    elif plan.store.exists():
        _check_provenance(plan)
    if not plan.store.exists():
        shutil.rmtree(state / "tracking", ignore_errors=True)  # markers of a vanished store
    packed = PackedDataset(plan.dataset)
    store = create_store(plan.out, plan.info, packed, list(plan.grid.plates), overwrite)
    shutil.rmtree(state / "failures", ignore_errors=True)  # records describe one run
    (state / "failures").mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    return store
