"""Running a command inside the project's Apptainer/Singularity image (``cell.sif``).

``wrap(argv, sif, binds)`` turns ``["python", "train.py", ...]`` into
``[RUNTIME, "exec", "--nv", "-B", "<data>,<runs>", sif, "python", ...]``. The runtime is
``$CELLBLOCK_APPTAINER`` (a command name or a path, e.g. the project's
``scripts/apptainer.sh``, which runs a local Apptainer where the host has none) or else
whichever of ``apptainer`` and ``singularity`` is on PATH (Apptainer first; Singularity
CE/PRO use the same command line). ``--nv`` binds the host's NVIDIA driver into the image;
on a machine without one Apptainer binds nothing and the job runs on CPU
(``scripts/apptainer.sh`` says so in a warning). Host folders the job reads or writes
must be bound, at the same path, unless Apptainer binds them by default ($HOME, /tmp,
the working directory).

The image comes from ``--sif PATH`` or, when that is not given, ``$CELLBLOCK_SIF``;
``--sif ''`` runs natively even when the variable is set.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from cellblock.errors import UserError
from cellblock.paths import SIF_ENV

__all__ = ["RUNTIMES", "RUNTIME_ENV", "SIF_ENV", "bind_list", "find_runtime", "python_command",
           "resolve_sif", "wrap"]  # fmt: skip

RUNTIMES = ("apptainer", "singularity")
RUNTIME_ENV = "CELLBLOCK_APPTAINER"


def find_runtime() -> str:
    """The container runtime's command: ``$CELLBLOCK_APPTAINER``, else ``apptainer`` or
    ``singularity``, whichever is on PATH (Apptainer first).

    A command name stays a name (found on PATH where the job runs); a path is made
    absolute, since jobs start in other working directories.

    Raises:
        UserError: ``$CELLBLOCK_APPTAINER`` names no executable; neither runtime is
            installed.
    """
    chosen = os.environ.get(RUNTIME_ENV, "").strip()
    if chosen:
        if shutil.which(chosen) is None:
            raise UserError(
                f"${RUNTIME_ENV} {chosen}: no such command (set it to apptainer, "
                "singularity or a path such as scripts/apptainer.sh, or unset it)"
            )
        return os.path.abspath(chosen) if os.sep in chosen else chosen
    for name in RUNTIMES:
        if shutil.which(name):
            return name
    raise UserError(
        "--sif: neither apptainer nor singularity is on PATH (load its module, e.g. "
        f"`module load apptainer`, or set ${RUNTIME_ENV}: where none is installable, "
        '`eval "$(scripts/apptainer_local.sh install)"`; or run without --sif)'
    )


def resolve_sif(sif: str | os.PathLike | None) -> Path | None:
    """The image to use: ``sif`` if given, else ``$CELLBLOCK_SIF``; None for none.

    Args:
        sif: ``--sif`` as given (None: not given; ``""``: explicitly none).

    Raises:
        UserError: The image file does not exist (naming it and where it came from).
    """
    source = "--sif"
    if sif is None:
        sif, source = os.environ.get(SIF_ENV), SIF_ENV
    if not sif:
        return None
    path = Path(sif).expanduser().absolute()
    if not path.is_file():
        raise UserError(f"{source} {sif}: no such image file (build it: containers/build.sh)")
    return path


def bind_list(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Absolute, de-duplicated bind paths; a folder inside another bound one is dropped.

    Args:
        paths: Host files or folders the job needs, bound at the same path.

    Raises:
        UserError: A path with ``,`` or ``:``, which Apptainer's ``-B src[:dst[:opts]]``
            list syntax cannot carry.
    """
    out: list[Path] = []
    for p in paths:
        path = Path(p).expanduser().absolute()
        if "," in str(path) or ":" in str(path):
            raise UserError(f"cannot bind {path} into the container: ',' and ':' separate "
                            "bind paths (rename or symlink the folder)")  # fmt: skip
        if path not in out:
            out.append(path)
    kept = [p for p in out if not any(q != p and p.is_relative_to(q) for q in out)]
    return [str(p) for p in kept]


def wrap(
    argv: Sequence[str],
    sif: str | os.PathLike,
    binds: Iterable[str | os.PathLike] = (),
    runtime: str | None = None,
) -> list[str]:
    """``argv`` run inside the image ``sif`` with ``binds`` bound at the same paths.

    Args:
        argv: The command, e.g. ``["python", "predict.py", ...]``; ``python`` is the
            image's own interpreter (its venv is first on the image's PATH).
        sif: The image file.
        binds: Host folders to bind (see :func:`bind_list`).
        runtime: The runtime's command (default: :func:`find_runtime`).
    """
    runtime = runtime or find_runtime()
    cmd = [runtime, "exec", "--nv"]
    bound = bind_list(binds)
    if bound:
        cmd += ["-B", ",".join(bound)]
    return [*cmd, str(sif), *argv]


def python_command(
    sif: str | os.PathLike,
    binds: Iterable[str | os.PathLike] = (),
    runtime: str | None = None,
) -> str:
    """The shell command that starts the image's Python: submitit's ``python`` setting."""
    return shlex.join(wrap(["python"], sif, binds, runtime))
