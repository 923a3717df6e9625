"""Which setup a run was trained from (``find_setup``), found from what the run records.

The prediction driver names the setup in the store's provenance and passes its folder
to the workers (``--setup``), so that a prediction needs the run folder alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from cellblock.errors import UserError
from cellblock.paths import Project

__all__ = ["find_setup"]


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
