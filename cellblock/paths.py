"""Where things are: the project a command works in, the container image's variable.

The library never takes its own location for the project: imported from a checkout or
from a wheel in site-packages, it behaves the same. The project (the folder holding
``01_data/`` .. ``04_ensemble/`` and ``runs/``) is resolved once, at the command-line
edge (the stage scripts, ``scripts/``, a setup's ``train.py``), by :meth:`Project.locate`,
and passed down as a :class:`Project`:

1. ``--project DIR``, where the command has it;
2. else ``$CELLBLOCK_PROJECT``;
3. else the checkout holding the script or setup folder (its nearest parent folder
   that holds ``02_train/``);
4. else the checkout holding the working directory (the same test);
5. else the working directory itself.

Dependency-free (``pathlib`` only), so any module, and a caller that only wants a
constant, imports it without loading torch, submitit or the command-line modules.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PROJECT_ENV", "SIF_ENV", "Project", "add_project_argument", "enclosing"]

# The environment variable naming the project folder (``--project``'s default).
PROJECT_ENV = "CELLBLOCK_PROJECT"
# The environment variable naming the Singularity/Apptainer image (``--sif``'s default).
SIF_ENV = "CELLBLOCK_SIF"
_TRAIN = "02_train"


@dataclass(frozen=True)
class Project:
    """A project folder: setups under ``02_train/``, runs under ``runs/``, the catalogs.

    Args:
        root: The project folder (made absolute).
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    @property
    def runs(self) -> Path:
        """``runs/``: default run and grid folders."""
        return self.root / "runs"

    @property
    def train_dir(self) -> Path:
        """``02_train/``: the setups, ``<dataset>/<setup>``."""
        return self.root / _TRAIN

    @property
    def catalog(self) -> Path:
        """``01_data/datasets.json``: the named datasets."""
        return self.root / "01_data" / "datasets.json"

    @property
    def checkpoints(self) -> Path:
        """``01_data/checkpoints.json``: where each setup's checkpoints are published."""
        return self.root / "01_data" / "checkpoints.json"

    def setup_name(self, setup_dir: str | Path) -> str:
        """A setup's name: its path under ``02_train`` (``synthetic/tiny``), else its folder's.

        Args:
            setup_dir: The setup folder.
        """
        folder = Path(setup_dir).resolve()
        try:
            return folder.relative_to(self.train_dir).as_posix()
        except ValueError:
            return folder.name

    def setup_runs(self, setup_dir: str | Path) -> Path:
        """``runs/<setup name>``: the default run (or grid) folder of a setup.

        Args:
            setup_dir: The setup folder (outside ``02_train``: ``runs/<its folder name>``).
        """
        return self.runs / self.setup_name(setup_dir)

    @classmethod
    def locate(cls, explicit: str | Path | None = None, start: str | Path | None = None) -> Project:
        """The project a command works in (the order is in the module docstring).

        Args:
            explicit: ``--project``, if given.
            start: The script or setup folder the command belongs to.
        """
        if explicit:
            return cls(Path(explicit))
        if os.environ.get(PROJECT_ENV):
            return cls(Path(os.environ[PROJECT_ENV]))
        for where in (start, Path.cwd()):
            found = enclosing(where) if where is not None else None
            if found is not None:
                return cls(found)
        return cls(Path.cwd())


def enclosing(path: str | Path) -> Path | None:
    """The nearest folder at or above ``path`` that holds ``02_train/`` (None: none does).

    Args:
        path: A file or folder.
    """
    path = Path(path).expanduser().resolve()
    for folder in (path, *path.parents):
        if (folder / _TRAIN).is_dir():
            return folder
    return None


def add_project_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--project DIR`` (see :meth:`Project.locate`) to a command's parser.

    Args:
        parser: The command's parser.
    """
    parser.add_argument(
        "--project",
        metavar="DIR",
        help=f"project folder (02_train/ setups, runs/, 01_data/ catalogs); default: "
        f"${PROJECT_ENV}, else the checkout holding this script, else the one holding the "
        "working directory, else the working directory",
    )
