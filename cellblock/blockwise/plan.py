"""What a prediction will do, checked before anything starts: the ``Plan``.

``make_plan`` validates every input a worker would otherwise trip over minutes
later on a cluster node — the checkpoint (exists, readable, the requested
iteration), the dataset (exists; has the channels the network was trained on; has
the split and experiments asked for), the TTA mode against the image shape — and
writes nothing. The plan is then saved as JSON (``PRED/blockwise/plan.json``): the
one file a worker reads, passed by path on its command line, so no setting travels
through environment variables or daisy's context string.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cellblock.atomic import atomic_write_text
from cellblock.blockwise.geometry import BlockGrid
from cellblock.blockwise.setups import find_setup
from cellblock.errors import UserError
from cellblock.paths import Project
from cellblock.screen.sites import select_sites
from cellblock.store.packed import PackedDataset
from cellblock.store.predictions import PredictionInfo, store_path
from cellblock.tta import tta_transforms

if TYPE_CHECKING:
    from cellblock.runs import RunInfo

__all__ = ["Plan", "make_plan"]


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs, and the provenance the store records.

    Args:
        run_id: This invocation (time and driver pid): tags worker records.
        run: The run folder.
        checkpoint: The checkpoint file.
        iteration: Its iteration.
        setup: Setup name (e.g. ``synthetic/tiny``).
        setup_dir: The setup folder (the worker's ``--setup``), or None.
        dataset: The packed dataset.
        out: ``PRED``: the store, ``logs/`` and ``blockwise/`` live here.
        tta: TTA mode.
        batch_size: Sites per forward pass.
        info: The store's provenance.
        grid: The blocks.
        cpu_threads: torch threads of a CPU worker (None = torch's default).
        readers: Reader threads per worker (None = the CPUs it was given on a GPU, 0 on
            a CPU; see ``Predictor``).
        compile: Run each worker's network through ``torch.compile``.
    """

    run_id: str
    run: str
    checkpoint: str
    iteration: int
    setup: str
    setup_dir: str | None
    dataset: str
    out: str
    tta: str
    batch_size: int
    info: PredictionInfo
    grid: BlockGrid
    cpu_threads: int | None = None
    readers: int | None = None
    compile: bool = False

    @property
    def store(self) -> Path:
        return store_path(self.out)

    @property
    def state_dir(self) -> Path:
        """``PRED/blockwise``: plan, done markers, block records, failure records."""
        return Path(self.out) / "blockwise"

    @property
    def stats_dir(self) -> Path:
        """``PRED/bnstats``: each plate's BatchNorm statistics, estimated once per run."""
        return Path(self.out) / "bnstats"

    @property
    def log_dir(self) -> Path:
        """``PRED/logs``: one log per worker (stdout and stderr)."""
        return Path(self.out) / "logs"

    def save(self, path: Path | None = None) -> Path:
        path = path or self.state_dir / "plan.json"
        obj = asdict(self)
        obj["info"], obj["grid"] = self.info.to_json(), self.grid.to_json()
        atomic_write_text(path, json.dumps(obj, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: Path | str) -> Plan:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such plan file")
        obj = json.loads(path.read_text())
        obj["info"] = PredictionInfo.from_json(obj["info"], str(path))
        obj["grid"] = BlockGrid.from_json(obj["grid"])
        return cls(**obj)


def _open_inputs(
    run: Path | str, data: Path | str, *, iteration: int | None, batch_size: int
) -> tuple[Path, Path, PackedDataset]:
    """The checkpoint, its run folder and the dataset, each checked.

    Args:
        run: The run folder (or a checkpoint file).
        data: The packed dataset.
        iteration: Checkpoint iteration; None = the latest.
        batch_size: Sites per forward pass (at least 1).

    Raises:
        UserError: A batch size below 1, no such checkpoint or dataset.
    """
    from cellblock.runs import run_checkpoint

    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    checkpoint = run_checkpoint(run, iteration)
    run_dir = Path(run) if Path(run).is_dir() else checkpoint.parents[1]
    if not Path(data).is_dir():
        raise UserError(f"--data {data}: no such packed dataset folder")
    return checkpoint, run_dir, PackedDataset(data)


def _check_model(checkpoint: Path, packed: PackedDataset, *, tta: str) -> tuple[RunInfo, list[int]]:
    """The run's checkpoint and the channels it reads, checked against the dataset.

    Args:
        checkpoint: The checkpoint file.
        packed: The dataset to predict.
        tta: The TTA mode (checked against the image shape).

    Raises:
        UserError: The dataset lacks the run's channels, or an unknown TTA mode.
    """
    # torch comes in here, not at import: a worker reads its plan before loading torch
    from cellblock.runs import check_channels, load_run_info

    run_info = load_run_info(checkpoint)
    channels = check_channels(run_info.config, packed, str(checkpoint))
    tta_transforms(tta, packed.info.image_size)
    return run_info, channels


def make_plan(
    run: Path | str,
    data: Path | str,
    out: Path | str,
    *,
    iteration: int | None = None,
    split: str = "test",
    experiments: list[str] | None = None,
    tta: str = "none",
    batch_size: int = 64,
    block_wells: int | None = None,
    setup: str | None = None,
    cpu_threads: int | None = None,
    readers: int | None = None,
    compile: bool = False,
    project: Project | None = None,
) -> Plan:
    """Validate the inputs of a prediction and describe it; nothing is written.

    Args:
        run: The run folder (or a checkpoint file).
        data: The packed dataset to predict.
        out: ``PRED``, the output folder.
        iteration: Checkpoint iteration; None = the latest.
        split: ``"test"``, ``"train"`` or ``"all"``.
        experiments: Experiments or ``EXP/PlateN`` plates to keep; None = all.
        tta: ``"none"``, ``"flips"`` or ``"d4"``.
        batch_size: Sites per forward pass.
        block_wells: Wells per block (None: whole plate rows, at least one batch of sites).
        setup: ``--setup`` (see ``find_setup``).
        cpu_threads: torch threads per CPU worker.
        readers: Reader threads per worker (None: see ``Predictor``); at least 0.
        compile: ``torch.compile`` each worker's network.
        project: The project ``--setup`` names and old runs' setups are found in
            (see ``find_setup``).

    Raises:
        UserError: Any input that would make a worker fail, named.
    """
    from cellblock.runs import class_ids
    from cellblock.training.checkpoint import code_version

    checkpoint, run_dir, packed = _open_inputs(run, data, iteration=iteration,
                                               batch_size=batch_size)  # fmt: skip
    run_info, channels = _check_model(checkpoint, packed, tta=tta)
    sites = select_sites(packed.metadata, split, experiments, source=f"dataset {packed.path}")
    if readers is not None and readers < 0:
        raise UserError(f"--readers must be at least 0, got {readers}")
    grid = BlockGrid.from_table(sites, block_wells, batch_sites=batch_size)
    setup_name, setup_dir = find_setup(run_dir, setup, project)
    info = PredictionInfo(
        setup=setup_name, run=str(run_dir.resolve()), iteration=run_info.iteration,
        classes=class_ids(run_info.config, packed), tta=tta,
        channels=tuple(c + 1 for c in channels), embedding_dim=run_info.embedding_dim,
        dataset=str(Path(data).resolve()), code_version=code_version(),
    )  # fmt: skip
    return Plan(
        run_id=f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}", run=info.run,
        checkpoint=str(checkpoint.resolve()), iteration=run_info.iteration, setup=setup_name,
        setup_dir=None if setup_dir is None else str(setup_dir), dataset=info.dataset,
        out=str(Path(out).resolve()), tta=tta, batch_size=batch_size, info=info, grid=grid,
        cpu_threads=cpu_threads, readers=readers, compile=compile,
    )  # fmt: skip
