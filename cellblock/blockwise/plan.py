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

import pandas as pd

from cellblock.atomic import atomic_write_text
from cellblock.blockwise.geometry import BlockGrid
from cellblock.dataset import PackedDataset
from cellblock.errors import UserError
from cellblock.paths import Project
from cellblock.predictions import PredictionInfo, store_path

__all__ = ["SPLITS", "Plan", "find_setup", "make_plan", "select_sites"]

SPLITS = ("test", "train", "all")


def select_sites(
    packed: PackedDataset, split: str, experiments: list[str] | None = None
) -> pd.DataFrame:
    """The site-table rows to predict.

    Args:
        packed: The dataset.
        split: ``"test"``, ``"train"`` or ``"all"``.
        experiments: Experiment names or ``"EXP/PlateN"`` plate keys; None = all of
            the split.

    Raises:
        UserError: A split the dataset does not have, an unknown experiment or plate,
            or one that is not in the split (each named, with what there is).
    """
    table = packed.metadata
    splits = sorted(table["split"].unique())
    if split not in SPLITS:
        raise UserError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    if split != "all" and split not in splits:
        raise UserError(f"--split {split}: dataset {packed.path} has no {split!r} split "
                        f"(its splits: {', '.join(splits)}); use --split all")  # fmt: skip
    chosen = table if split == "all" else table[table["split"] == split]
    if experiments:
        keys = table["experiment"] + "/Plate" + table["plate"].astype(str)
        keep = pd.Series(False, index=table.index)
        for name in experiments:
            hit = (keys == name) if "/" in name else (table["experiment"] == name)
            if not hit.any():
                have = sorted(table["experiment"].unique())
                raise UserError(f"--experiments {name}: not in dataset {packed.path} "
                                f"(experiments: {', '.join(have)})")  # fmt: skip
            if not hit.loc[chosen.index].any():
                where = ", ".join(sorted(table.loc[hit, "split"].unique()))
                raise UserError(f"--experiments {name}: in split {where}, not {split}; "
                                "use --split all or that split")  # fmt: skip
            keep |= hit
        chosen = chosen[keep.loc[chosen.index]]
    return chosen


def find_setup(
    run: Path, setup: str | Path | None = None, project: Project | None = None
) -> tuple[str, Path | None]:
    """The setup a run was trained from: its name and folder (None if not found).

    Found from what the run records, never from the run folder's path: ``train.py``
    writes the setup folder (absolute) into ``run.json`` as ``setup_dir``. A run
    without it (trained before it was recorded), or whose recorded folder is gone (a
    run copied or fetched from elsewhere), falls back to ``run.json``'s ``setup`` name
    under the project's ``02_train``, then (a grid run of before) to the setup its
    grid's ``grid.json`` records for it; else the setup is unknown (named after the run
    folder) and ``--setup`` names it.

    Args:
        run: The run folder.
        setup: ``--setup``: a setup folder, or its name under the project's ``02_train``;
            None = from ``run.json`` as above.
        project: The project; None = ``Project.locate()`` (from the working directory).

    Raises:
        UserError: ``--setup`` is not a setup folder (no config.yaml).
    """
    project = project or Project.locate()
    if setup is not None:
        folder = Path(setup) if Path(setup).is_dir() else project.train_dir / str(setup)
        if not (folder / "config.yaml").is_file():
            raise UserError(f"--setup {setup}: not a setup folder (no config.yaml)")
        folder = folder.resolve()
        return project.setup_name(folder), folder
    recorded = run / "run.json"
    info = json.loads(recorded.read_text()) if recorded.is_file() else {}
    name, where = info.get("setup"), info.get("setup_dir")
    if isinstance(where, str) and (Path(where) / "config.yaml").is_file():
        folder = Path(where).resolve()
        return (name if isinstance(name, str) and name else folder.name), folder
    if isinstance(name, str) and name and (project.train_dir / name / "config.yaml").is_file():
        return name, (project.train_dir / name).resolve()
    in_grid = _grid_setup(run)
    if in_grid is not None:
        return project.setup_name(in_grid), in_grid
    return run.resolve().name, None


def _grid_setup(run: Path) -> Path | None:
    """The setup folder the grid holding ``run`` records (``GRID/ch<c>/fold_<k>``), if any.

    Args:
        run: A run folder, perhaps one of a grid's (``scripts/submit_train.py``).
    """
    run = run.resolve()
    for grid in run.parents[:2]:
        manifest = grid / "grid.json"  # cellblock.cluster.grid_files.MANIFEST (not imported:
        if not manifest.is_file():  # that package loads submitit)
            continue
        try:
            recorded = json.loads(manifest.read_text())
            runs = {r["run_dir"] for r in recorded["runs"]}
            folder = Path(recorded["setup"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if run.relative_to(grid).as_posix() in runs and (folder / "config.yaml").is_file():
            return folder.resolve()
    return None


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

    @property
    def store(self) -> Path:
        return store_path(self.out)

    @property
    def state_dir(self) -> Path:
        """``PRED/blockwise``: plan, done markers, block records, failure records."""
        return Path(self.out) / "blockwise"

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


def make_plan(
    run: Path | str,
    data: Path | str,
    out: Path | str,
    iteration: int | None = None,
    split: str = "test",
    experiments: list[str] | None = None,
    tta: str = "none",
    batch_size: int = 64,
    block_wells: int | None = None,
    setup: str | None = None,
    cpu_threads: int | None = None,
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
        block_wells: Wells per block (None: one plate row).
        setup: ``--setup`` (see ``find_setup``).
        cpu_threads: torch threads per CPU worker.
        project: The project ``--setup`` names and old runs' setups are found in
            (see ``find_setup``).

    Raises:
        UserError: Any input that would make a worker fail, named.
    """
    # torch comes in here, not at import: a worker reads its plan before loading torch
    from cellblock.inference import tta_transforms
    from cellblock.runs import check_channels, class_ids, load_run_info, run_checkpoint
    from cellblock.training.checkpoint import code_version

    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    checkpoint = run_checkpoint(run, iteration)
    run_dir = Path(run) if Path(run).is_dir() else checkpoint.parents[1]
    if not Path(data).is_dir():
        raise UserError(f"--data {data}: no such packed dataset folder")
    packed = PackedDataset(data)
    run_info = load_run_info(checkpoint)
    cfg = run_info.config
    channels = check_channels(cfg, packed, str(checkpoint))
    tta_transforms(tta, packed.info.image_size)
    table = select_sites(packed, split, experiments)
    grid = BlockGrid.from_table(table, block_wells)
    setup_name, setup_dir = find_setup(run_dir, setup, project)
    info = PredictionInfo(
        setup=setup_name,
        run=str(run_dir.resolve()),
        iteration=run_info.iteration,
        classes=class_ids(cfg, packed),
        tta=tta,
        channels=tuple(c + 1 for c in channels),
        embedding_dim=run_info.embedding_dim,
        dataset=str(Path(data).resolve()),
        code_version=code_version(),
    )
    return Plan(
        run_id=f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}",
        run=info.run,
        checkpoint=str(checkpoint.resolve()),
        iteration=run_info.iteration,
        setup=setup_name,
        setup_dir=None if setup_dir is None else str(setup_dir),
        dataset=info.dataset,
        out=str(Path(out).resolve()),
        tta=tta,
        batch_size=batch_size,
        info=info,
        grid=grid,
        cpu_threads=cpu_threads,
    )
