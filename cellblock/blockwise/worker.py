"""The prediction worker: ``python -m cellblock.blockwise.worker --plan PRED/blockwise/plan.json
[--setup SETUP_DIR]``, started by the driver (natively, in a SLURM job, in the image).

A persistent daisy worker: it loads the checkpoint once, then loops on
``acquire_block``: read the block's wells from the packed dataset, predict them
(``cellblock.inference.Predictor``: training's normalization, TTA), write logits and
embeddings with ``cellblock.store.predictions.write_wells``, release. The three steps
overlap across blocks (``_Pipeline``): the next block's sites are read while this one
computes and the previous one is written. The done marker daisy sets on release is
written only after the block's chunks are on disk.

A block that raises is reported to daisy as failed, with its traceback (daisy
retries it up to ``max_retries``), and recorded in
``PRED/blockwise/failures/block_{id}.json`` (plate, wells, traceback, this worker's
log) for the driver's summary; the worker goes on with the next block, keeping its
loaded model. Only ``MAX_FAILURES_IN_A_ROW`` failures in a row (a broken worker,
e.g. a lost GPU) make it exit non-zero, which daisy counts against
``max_worker_restarts``. Every finished block appends one line to
``PRED/blockwise/blocks.jsonl`` (run id, block, sites, start and end times, CPU seconds).

Fault injection, for the tests of failure handling (off unless set; never set it in
production): ``CELLBLOCK_PREDICT_FAULT`` holds comma-separated directives:

- ``start``: raise before connecting to daisy (a worker that crashes at start);
- ``well=EXP/PlateN/WELL``: raise on every block holding that well
  (e.g. ``well=HEPG2-03/Plate1/B05``);
- ``sleep=SECONDS``: sleep before each block (slow workers, to kill one mid-run).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cellblock.atomic import atomic_write_text
from cellblock.blockwise.launcher import WORKER_LOG_ENV
from cellblock.blockwise.plan import Plan
from cellblock.cli.values import comma_list, key_value
from cellblock.errors import UserError
from cellblock.screen.plates import parse_plate_key

__all__ = [
    "FAULT_ENV",
    "MAX_FAILURES_IN_A_ROW",
    "Fault",
    "InjectedFaultError",
    "connections",
    "serve",
    "worker_main",
]

log = logging.getLogger(__name__)
FAULT_ENV = "CELLBLOCK_PREDICT_FAULT"
MAX_FAILURES_IN_A_ROW = 4  # more than max_retries + 1: one bad block alone never ends a worker


class InjectedFaultError(RuntimeError):
    """Raised by ``CELLBLOCK_PREDICT_FAULT`` (tests of failure handling only)."""


@dataclass(frozen=True)
class Fault:
    """Faults injected through ``CELLBLOCK_PREDICT_FAULT`` (see the module docstring).

    Args:
        at_start: Raise before connecting.
        wells: ``"EXP/PlateN/WELL"`` names: raise on any block holding one.
        sleep: Seconds slept before each block.
    """

    at_start: bool = False
    wells: frozenset[str] = frozenset()
    sleep: float = 0.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Fault:
        """Parse ``CELLBLOCK_PREDICT_FAULT``; a malformed directive is a UserError."""
        text = environ.get(FAULT_ENV, "").strip()
        at_start, wells, sleep = False, set(), 0.0
        for item in comma_list(text, what=FAULT_ENV):
            key, value = key_value(item, what=FAULT_ENV, bare=True)
            if key == "start" and not value:
                at_start = True
            elif key == "well" and value.count("/") == 2:
                wells.add(value)
            elif key == "sleep":
                try:
                    sleep = float(value)
                except ValueError:
                    raise UserError(f"{FAULT_ENV}: sleep={value!r} is not a number") from None
            else:
                raise UserError(f"{FAULT_ENV}: unknown directive {item!r} "
                                "(start, well=EXP/PlateN/WELL, sleep=SECONDS)")  # fmt: skip
        return cls(at_start, frozenset(wells), sleep)

    def before_block(self, key: str, well_names: Sequence[str]) -> None:
        """Sleep, then raise if the block holds a faulty well."""
        if self.sleep:
            time.sleep(self.sleep)
        bad = sorted(self.wells & {f"{key}/{name}" for name in well_names})
        if bad:
            raise InjectedFaultError(f"injected fault ({FAULT_ENV}) on well {bad[0]}")


class BlockRecords:
    """The worker's side of the run's bookkeeping files (see the module docstring).

    Args:
        plan: The run's plan.
        worker_id: daisy's worker id.
    """

    def __init__(self, plan: Plan, worker_id: int):
        self.plan, self.worker_id = plan, worker_id
        self.failures = plan.state_dir / "failures"
        self.blocks = plan.state_dir / "blocks.jsonl"
        self.log_path = os.environ.get(WORKER_LOG_ENV, "")

    def done(
        self, block_id: int, key: str, *, n_wells: int, n_sites: int, seconds: float, cpu: float
    ) -> None:
        """Record a finished block (``blocks.jsonl``); drop its failure record, if any.

        Args:
            block_id: daisy's block id.
            key: The plate (``EXP/PlateN``).
            n_wells: Wells in the block.
            n_sites: Sites predicted.
            seconds: Wall time of the block.
            cpu: CPU seconds of the block.
        """
        (self.failures / f"block_{block_id}.json").unlink(missing_ok=True)
        end = time.time()
        line = {"run_id": self.plan.run_id, "block_id": block_id, "plate": key, "wells": n_wells,
                "sites": n_sites, "seconds": round(seconds, 4), "cpu_s": round(cpu, 4),
                "start": end - seconds, "end": end, "worker_id": self.worker_id}  # fmt: skip
        # one short O_APPEND write per line: concurrent workers never interleave within one
        with open(self.blocks, "a") as f:
            f.write(json.dumps(line) + "\n")

    def failed(self, block_id: int, key: str, wells: Sequence[str], error: str) -> None:
        record = {"run_id": self.plan.run_id, "block_id": block_id, "plate": key,
                  "wells": list(wells), "worker_id": self.worker_id, "pid": os.getpid(),
                  "log": self.log_path, "traceback": error, "time": time.time()}  # fmt: skip
        atomic_write_text(self.failures / f"block_{block_id}.json", json.dumps(record, indent=1))


def _well_names(predictor: Any, wells: Sequence[tuple[int, int]]) -> list[str]:
    fmt = predictor.packed.info.plate_format
    return [fmt.well_name(r, c) for r, c in wells]


@dataclass
class _HeldBlock:
    """A block this worker holds, from acquire to release (see ``serve``).

    Args:
        client: The ``daisy.Client`` it was acquired on.
        context: daisy's ``acquire_block`` context, entered.
        block: The daisy block.
        key: Its plate (``EXP/PlateN``).
        wells: Its wells ``(row, col)``.
        names: Their names (``B05``).
        start: ``perf_counter`` at acquire.
        reads: Its sites being read (None: no wells, or it failed before).
        write: Its chunks being written.
        error: Why it failed, if it did.
    """

    client: Any
    context: Any
    block: Any
    key: str = ""
    wells: list[tuple[int, int]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    start: float = 0.0
    reads: Any = None
    write: Future | None = None
    error: BaseException | None = None

    @property
    def block_id(self) -> int:
        return int(self.block.block_id[1])


class _Pipeline:
    """One worker's blocks in flight: block k+1's sites are read while block k is computed
    and block k-1's outputs are written; a block is released (its done marker set) only
    after its chunks are on disk.

        acquire k+1 ─► read k+1 (reader threads) ...................
                       compute k (device) ─► write k (writer thread) ─► release k
                                                                        (after compute k+1)

    At most two blocks are held, and at most two blocks' reads run ahead (each bounded
    to two batches of sites), so memory does not grow with the block or the plate.

    Each block is acquired on a connection that holds no other block: daisy answers
    "no blocks left" by ending that connection's session, and a block still held on it
    would be lost (retried elsewhere, then failed). So the worker keeps three
    connections (``connections``) and acquires on a free one.

    Args:
        clients: Three connected ``daisy.Client`` s (``connections``).
        plan: The run's plan.
        predictor: The loaded ``Predictor``.
        fault: Injected faults (tests).
        records: The run's bookkeeping.
    """

    def __init__(
        self,
        clients: Sequence[Any],
        plan: Plan,
        predictor: Any,
        fault: Fault,
        records: BlockRecords,
    ):
        from cellblock.store.predictions import write_wells

        self.plan, self.predictor, self.fault = plan, predictor, fault
        self.records, self.write_wells = records, write_wells
        self.free = list(clients)
        self.writer = ThreadPoolExecutor(1, "write")
        self.finished = self.in_a_row = 0
        self.cpu = time.process_time()

    def acquire(self) -> _HeldBlock | None:
        """The next block, its reads started; None when daisy has none left."""
        client = self.free.pop()
        context = client.acquire_block()
        block = context.__enter__()
        if block is None:
            context.__exit__(None, None, None)
            return None  # that connection's session is over: it stays out of ``free``
        held = _HeldBlock(client, context, block, start=time.perf_counter())
        try:
            offset, shape = tuple(block.write_roi.offset), tuple(block.write_roi.shape)
            held.key, held.wells = self.plan.grid.wells_in(offset, shape)
            held.names = _well_names(self.predictor, held.wells)
            self.fault.before_block(held.key, held.names)
            if held.wells:
                experiment, plate = parse_plate_key(held.key)
                held.reads = self.predictor.read_wells(experiment, plate, held.wells)
        except Exception as err:
            held.error = err
        return held

    def compute(self, held: _HeldBlock) -> None:
        """Predict ``held`` and start writing it (a failure is kept for ``release``)."""
        if held.error is not None or held.reads is None:
            return
        try:
            logits, embeddings = self.predictor.predict_read(held.reads)
        except Exception as err:
            held.error = err
            return
        args = (self.plan.store, held.key, held.wells, logits, embeddings)
        held.write = self.writer.submit(self.write_wells, *args)

    def release(self, held: _HeldBlock) -> None:
        """Wait for ``held``'s chunks, then release it to daisy as done or failed.

        Raises:
            RuntimeError: ``MAX_FAILURES_IN_A_ROW`` blocks failed one after another.
        """
        if held.write is not None:
            try:
                held.write.result()
            except Exception as write_error:
                held.error = write_error
        self.free.append(held.client)
        if held.error is None:
            held.context.__exit__(None, None, None)
            self._done(held)
            return
        err = held.error
        text = "".join(traceback.format_exception(err))
        log.error(
            "block %d (%s %s) failed:\n%s", held.block_id, held.key, ",".join(held.names), text
        )
        self.records.failed(held.block_id, held.key, held.names, text)
        held.context.__exit__(type(err), err, err.__traceback__)  # daisy: failed, retried
        self.in_a_row += 1
        if self.in_a_row >= MAX_FAILURES_IN_A_ROW:
            raise RuntimeError(f"{self.in_a_row} blocks failed in a row; this worker gives up")

    def _done(self, held: _HeldBlock) -> None:
        self.in_a_row, self.finished = 0, self.finished + 1
        seconds = time.perf_counter() - held.start
        cpu, self.cpu = time.process_time() - self.cpu, time.process_time()
        offset, shape = tuple(held.block.write_roi.offset), tuple(held.block.write_roi.shape)
        n_sites = self.plan.grid.sites_in(offset, shape)
        self.records.done(
            held.block_id,
            held.key,
            n_wells=len(held.wells),
            n_sites=n_sites,
            seconds=seconds,
            cpu=cpu,
        )
        log.info(
            "block %d %s %s: %d sites in %.2f s",
            held.block_id,
            held.key,
            ",".join(held.names),
            n_sites,
            seconds,
        )


def connections(client: Any) -> list[Any]:
    """The worker's own ``daisy.Client`` and two more connections to its server (see
    ``_Pipeline``): the same context without the worker id, which ties only the worker's
    own connection to the process daisy started."""
    import daisy.v2 as daisy

    extra = client.context.copy()
    extra["worker_id"] = -1
    return [client, daisy.Client(extra), daisy.Client(extra)]


def serve(clients: Sequence[Any], plan: Plan, predictor: Any, fault: Fault, worker_id: int) -> int:
    """Process blocks until daisy has none left; returns how many this worker finished.

    Args:
        clients: Three connections to the daisy server (``connections``).
        plan: The run's plan.
        predictor: The loaded ``Predictor``.
        fault: Injected faults (tests).
        worker_id: daisy's worker id (for the records).

    Raises:
        RuntimeError: ``MAX_FAILURES_IN_A_ROW`` blocks failed one after another.
    """
    pipe = _Pipeline(clients, plan, predictor, fault, BlockRecords(plan, worker_id))
    writing: _HeldBlock | None = None  # computed, chunks being written
    current = pipe.acquire()
    try:
        while current is not None:
            following = pipe.acquire()  # its sites load while this block computes
            pipe.compute(current)
            if writing is not None:
                pipe.release(writing)
            writing, current = current, following
        if writing is not None:
            pipe.release(writing)
            writing = None
    finally:
        pipe.writer.shutdown(wait=True)
    return pipe.finished


def worker_main(argv: Sequence[str] | None = None) -> int:
    """``--plan PLAN [--setup DIR]``: one persistent prediction worker (started by the driver).

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        prog="python -m cellblock.blockwise.worker",
        description="A daisy worker of 03_predict/predict_blockwise.py (started by it, with "
        "DAISY_CONTEXT set): loads the checkpoint once and predicts blocks until none are left.",
    )
    parser.add_argument("--plan", required=True, help="PRED/blockwise/plan.json")
    parser.add_argument("--setup", help="the setup folder of the run (logged; the plan names "
                        "the checkpoint and everything else)")  # fmt: skip
    args = parser.parse_args(argv)
    setup_dir = args.setup
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    fault = Fault.from_env()
    plan = Plan.load(args.plan)
    log.info("worker pid %d, setup %s (%s), plan %s", os.getpid(), plan.setup,
             setup_dir or "not named", args.plan)  # fmt: skip
    if fault.at_start:
        raise InjectedFaultError(f"injected start fault ({FAULT_ENV})")

    import daisy.v2 as daisy
    import torch

    from cellblock.inference import Predictor
    from cellblock.store.packed import PackedDataset

    if plan.cpu_threads and not torch.cuda.is_available():
        torch.set_num_threads(plan.cpu_threads)  # workers share the cores, not oversubscribe
    predictor = Predictor(
        plan.checkpoint,
        PackedDataset(plan.dataset),
        plan.tta,
        plan.batch_size,
        readers=plan.readers,
        stats_dir=plan.stats_dir,
        compile=plan.compile,
    )
    client = daisy.Client()
    worker_id = int(client.context["worker_id"])
    log.info("worker %d: daisy server %s:%s, device %s", worker_id, client.host, client.port,
             predictor.device)  # fmt: skip
    try:
        finished = serve(connections(client), plan, predictor, fault, worker_id)
    finally:
        predictor.close()
    log.info("worker %d: no blocks left; finished %d", worker_id, finished)
    return 0


if __name__ == "__main__":
    from cellblock.cli import run

    run(worker_main)
