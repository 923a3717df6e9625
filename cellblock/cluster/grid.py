"""A grid of training runs (folds x channel subsets) submitted as one array job.

The 4th-place RxRx1 recipe trains one network per (fold, channel subset): 5 folds x 6
leave-one-channel-out subsets = 30 runs of one setup, later ensembled. Each run is a
``TrainTask`` (``train.py`` of the setup, preemption-safe); on SLURM the grid is one
array job, so ``--array-parallelism`` caps how many run at once.

Grid folder (``--out``, default ``runs/<dataset>/<setup>``)::

    grid.json                   the grid (setup, data, runs) and every submission of it
                                (cluster, job folder, job id of each run)
    jobs/<stamp>/               submitit's files of one submission: pickles, the sbatch
                                script, each task's stdout/stderr
    ch1-2-3-4-5/fold_0/         a run folder, as train.py makes it; logs/ links to the
                                job's output

Submitting again resumes: runs already at the target iteration are skipped, the others
continue from their latest checkpoint.

Stages: ``--init-from`` starts new runs from another run's or grid's weights
(``grid_init``); reading a grid folder (``grid_files``) is below both.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cellblock.atomic import atomic_write_text
from cellblock.cluster.grid_axes import GridRun, channels_name, parse_channel_sets, parse_folds
from cellblock.cluster.grid_files import MANIFEST, latest_iteration, load_manifest
from cellblock.cluster.grid_init import init_checkpoints
from cellblock.cluster.train_task import TrainSpec
from cellblock.errors import UserError
from cellblock.paths import Project
from cellblock.store.packed import PackedDataset
from cellblock.training.setupconfig import load_setup_config

__all__ = [
    "GridRun",
    "TrainGrid",
    "default_out",
    "latest_iteration",
    "load_manifest",
    "make_grid",
    "save_manifest",
    "setup_folder",
]


@dataclass(frozen=True)
class TrainGrid:
    """Folds x channel subsets of one setup.

    Attributes:
        setup_dir: The setup folder (``02_train/<dataset>/<setup>``).
        data: The packed dataset.
        out: The grid folder.
        iterations: Iteration each run trains to.
        folds: Validation folds.
        channel_sets: Channel subsets (1-based).
        overrides: ``--set`` values for every run (``{"section.key": value}``).
        init_from: A run folder, checkpoint or grid folder whose weights start new runs
            (``grid_init``); None: from the setup's ``net.pretrained``.
        init_checkpoints: Run index -> the checkpoint file that run starts from, as
            ``grid_init.init_checkpoints`` settles it.
        project: The project (relative config paths, setup names); None: each task
            locates it from the setup folder.
    """

    setup_dir: Path
    data: Path
    out: Path
    iterations: int
    folds: tuple[int, ...]
    channel_sets: tuple[tuple[int, ...], ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: Path | None = None
    init_checkpoints: dict[int, str] = field(default_factory=dict)
    project: Project | None = None

    def runs(self) -> list[GridRun]:
        """Every run, channel subsets outer, folds inner."""
        pairs = [(c, f) for c in self.channel_sets for f in self.folds]
        return [GridRun(i, c, f, self.out / channels_name(c) / f"fold_{f}")
                for i, (c, f) in enumerate(pairs)]  # fmt: skip

    def spec(self, run: GridRun) -> TrainSpec:
        """The training call of ``run``: fold and channels override the setup's split."""
        overrides = {
            **self.overrides,
            "data.fold": run.fold,
            "data.val_experiments": [],  # a fold split replaces the setup's held-out list
            "data.channels": list(run.channels),
            "net.in_channels": len(run.channels),
        }
        project = str(self.project.root) if self.project else None
        return TrainSpec(str(self.setup_dir), str(self.data), str(run.run_dir), self.iterations,
                         overrides, self.init_checkpoints.get(run.index), project)  # fmt: skip

    def describe(self) -> dict[str, Any]:
        """The grid part of ``grid.json``."""
        return {
            "setup": str(self.setup_dir),
            "data": str(self.data),
            "iterations": self.iterations,
            "folds": list(self.folds),
            "channel_sets": [list(c) for c in self.channel_sets],
            "overrides": self.overrides,
            "init_from": str(self.init_from) if self.init_from else None,
            "runs": [
                {"index": r.index, "channels": list(r.channels), "fold": r.fold,
                 "run_dir": str(r.run_dir.relative_to(self.out)),
                 "init_checkpoint": self.init_checkpoints.get(r.index),
                 "train": self.spec(r).argv()}
                for r in self.runs()
            ],
        }  # fmt: skip


def save_manifest(grid: TrainGrid, submission: dict[str, Any] | None = None) -> None:
    """Write ``grid.json``: the grid as it is now, earlier submissions, and ``submission``."""
    path = grid.out / MANIFEST
    try:
        submissions = json.loads(path.read_text()).get("submissions", [])
    except (OSError, ValueError, AttributeError):
        submissions = []
    if submission is not None:
        submissions.append(submission)
    data = {**grid.describe(), "submissions": submissions}
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def new_job_folder(out: Path) -> Path:
    """A job folder no earlier submission used (job ids repeat after a cluster reset)."""
    stamp = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    return Path(out) / "jobs" / stamp


def setup_folder(setup: str | Path, project: Project | None = None) -> Path:
    """The setup folder as given (relative to here), else relative to the project.

    Args:
        setup: ``--setup``.
        project: The project; None = ``Project.locate()`` (from the working directory).
    """
    project = project or Project.locate()
    for candidate in (Path(setup), project.root / setup):
        if (candidate / "config.yaml").is_file():
            return candidate.resolve()
    raise UserError(f"--setup {setup}: no config.yaml there (expected 02_train/<dataset>/<setup>)")


def default_out(setup_dir: Path, project: Project | None = None) -> Path:
    """``<project>/runs/<dataset>/<setup>``: a setup's default grid folder.

    Args:
        setup_dir: The setup folder (outside ``02_train``: ``runs/<its folder name>``).
        project: The project; None = ``Project.locate(start=setup_dir)``.
    """
    return (project or Project.locate(start=setup_dir)).setup_runs(setup_dir)


def _n_channels(data: Path) -> int:
    try:
        return len(PackedDataset(data).info.channels)
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"--data {data}: not a packed dataset ({e})") from None


def _inputs(
    out_dir: Path, data: str | Path | None, init_from: str | Path | None
) -> tuple[dict[str, Any], Path, Path | None]:
    """The grid folder's previous ``grid.json`` (or {}), the dataset and the runs' source,
    each defaulting to what that manifest records.

    Args:
        out_dir: The grid folder.
        data: ``--data``, or None.
        init_from: ``--init-from``, or None.

    Raises:
        UserError: No dataset given or recorded, or no such dataset folder.
    """
    previous = load_manifest(out_dir) if (out_dir / MANIFEST).is_file() else {}
    if data is None:
        if "data" not in previous:
            raise UserError(f"--data is needed: {out_dir} has no grid naming a dataset")
        data = previous["data"]
    init_from = init_from or previous.get("init_from")
    data_dir = Path(data).absolute()
    if not data_dir.is_dir():
        raise UserError(f"--data {data}: no such packed dataset folder")
    return previous, data_dir, Path(init_from).absolute() if init_from else None


def make_grid(
    setup: str | Path,
    *,
    folds: str,
    channel_sets: str,
    data: str | Path | None = None,
    out: str | Path | None = None,
    iterations: int | None = None,
    overrides: dict[str, Any] | None = None,
    init_from: str | Path | None = None,
    project: Project | None = None,
) -> TrainGrid:
    """A grid from command-line values, with the defaults filled in.

    Args:
        setup: The setup folder, e.g. ``02_train/rxrx1/densenet`` (relative to the
            working directory or the project).
        folds: ``0-4``, ``0,2``...
        channel_sets: ``all``, ``leave-one-out`` or ``"1,2,3;4,5,6"``.
        data: The packed dataset (default: the one in the grid's ``grid.json``).
        out: The grid folder (default ``runs/<dataset>/<setup>`` in the project).
        iterations: Iteration each run trains to (default: the setup's
            ``train.schedule_iters``).
        overrides: ``--set`` values for every run.
        init_from: A run folder, checkpoint or grid whose weights start the runs that
            have no checkpoint yet (default: the one in the grid's ``grid.json``).
        project: The project (``--project``); None = located from the setup folder.

    Raises:
        UserError: No such setup or dataset, bad folds or channel sets, nothing to start
            a run from in ``init_from``.
    """
    setup_dir = setup_folder(setup, project)
    project = project or Project.locate(start=setup_dir)
    out_dir = Path(out).absolute() if out else default_out(setup_dir, project)
    previous, data_dir, source = _inputs(out_dir, data, init_from)
    overrides = dict(overrides or {})
    if iterations is None:
        iterations = int(load_setup_config(setup_dir / "config.yaml", overrides, project)
                         ["train"]["schedule_iters"])  # fmt: skip
    if iterations < 1:
        raise UserError(f"--iterations: need at least 1, got {iterations}")
    grid = TrainGrid(
        setup_dir=setup_dir, data=data_dir, out=out_dir, iterations=iterations,
        folds=tuple(parse_folds(folds)),
        channel_sets=tuple(parse_channel_sets(channel_sets, _n_channels(data_dir))),
        overrides=overrides, init_from=source, project=project,
    )  # fmt: skip
    starts = init_checkpoints(source=grid.init_from, out=grid.out, runs=grid.runs(),
                              net_of=lambda run: grid.spec(run).resolved_config()["net"],
                              previous=previous)  # fmt: skip
    return replace(grid, init_checkpoints=starts)
