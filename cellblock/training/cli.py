"""The one entry point behind every setup folder's ``mknet.py`` and ``train.py``.

A setup is its ``config.yaml``; its scripts are a few lines each::

    run(lambda: train_main(Path(__file__).parent))

Default run folder: ``<project>/runs/<setup>[/ch<channels>][/fold_<k>]``, where
``<setup>`` is the setup folder's path under the project's ``02_train`` (e.g.
``synthetic/tiny``), or the folder's own name for a setup outside it (a copy in
``/scratch/me/tiny``: ``runs/tiny``). The project is ``--project``, else as
``cellblock.paths.Project.locate`` finds it from the setup folder (so a setup in a
checkout writes to that checkout's ``runs/`` whatever the working directory).
``mknet.py`` writes ``net_config.json`` into that run folder (the setup folder stays
source only); ``train.py`` writes it there too, and records the setup folder (absolute)
in ``run.json``, which is how prediction finds the setup again.

One writer per run folder: ``train.py`` holds ``RUN/train.lock`` (:func:`run_lock`) from
before it writes anything there until training returns; a second ``train.py`` on the
same folder is refused at once with the holder's host and pid.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cellblock.atomic import atomic_write_text
from cellblock.cli import parse_overrides, writing
from cellblock.cli.values import comma_list
from cellblock.errors import ConfigError, UserError
from cellblock.finished import remove_temporary
from cellblock.locks import FolderBusyError, hold
from cellblock.paths import Project, add_project_argument
from cellblock.training.setupconfig import load_setup_config

__all__ = ["default_run_dir", "mknet_main", "run_lock", "train_main"]

log = logging.getLogger(__name__)


def default_run_dir(
    setup_dir: Path,
    channels: Sequence[int] | None,
    fold: int | None,
    project: Project | None = None,
) -> Path:
    """``runs/<setup>[/ch<channels>][/fold_<k>]`` under the project root.

    Args:
        setup_dir: The setup folder.
        channels: The ``--channels`` subset (1-based), if any.
        fold: The ``--fold``, if any.
        project: The project; None = ``Project.locate(start=setup_dir)``.
    """
    out = (project or Project.locate(start=setup_dir)).setup_runs(setup_dir)
    if channels:
        out = out / ("ch" + "-".join(map(str, channels)))
    if fold is not None:
        out = out / f"fold_{fold}"
    return out


@contextlib.contextmanager
def run_lock(run_dir: Path, wait_s: float = 0.0) -> Iterator[None]:
    """Hold ``run_dir/train.lock`` while training writes the run folder.

    Data parallel: only rank 0 takes it; it alone writes the folder, and the other
    ranks of its job would wait for it forever.

    Args:
        run_dir: The run folder (created if needed).
        wait_s: Seconds to wait for a holder to end (0: refuse at once).

    Raises:
        FolderBusyError: Another process holds it (the message names its host and pid).
    """
    from cellblock.training.distributed import DistEnv

    if not DistEnv.from_env().is_main:
        yield
        return
    lock, what = Path(run_dir) / "train.lock", f"run folder {run_dir}"
    if wait_s > 0:
        try:  # say why we wait before we do
            with hold(lock, what=what):
                pass
        except FolderBusyError as e:
            log.warning("%s: waiting up to %.0f s", e, wait_s)
    with hold(lock, what=what, wait_s=wait_s):
        for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
            remove_temporary(folder)  # what a killed attempt was writing
        yield


def _channels(text: str) -> list[int]:
    try:
        return comma_list(text, what="--channels", type=int)
    except UserError:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,2,3,4,5, got {text!r}") from None


def _parser(setup_dir: Path, train: bool) -> argparse.ArgumentParser:
    what = "Train" if train else "Build, summarize and describe (net_config.json) the network of"
    p = argparse.ArgumentParser(
        description=f"{what} the setup in {setup_dir} ({setup_dir / 'config.yaml'}).",
        epilog="Run folder default: runs/<setup>[/ch<channels>][/fold_<k>] in the project, "
        "<setup> being the setup's path under its 02_train/ (else the setup folder's name). "
        "Relative paths in config.yaml are relative to the project too.",
    )
    if train:
        p.add_argument("iterations", type=int, help="iteration to reach (resumes from RUN)")
        p.add_argument("--data", help="packed dataset (default: the one RUN was trained on)")
        p.add_argument("--init-from", help="run folder or checkpoint: start from its weights")
    p.add_argument("--out", help="run folder (default: see below)")
    add_project_argument(p)
    p.add_argument("--fold", type=int, help="validation fold (sets data.fold)")
    p.add_argument("--channels", type=_channels, help="1-based subset, e.g. 1,2,3,4,5")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. train.lr=0.01 (repeatable)",
    )
    return p


def _resolve(
    setup_dir: Path, args: argparse.Namespace, project: Project | None
) -> tuple[dict[str, Any], Path, Project]:
    """The resolved config, the run folder and the project of a command line.

    Args:
        setup_dir: The setup folder.
        args: The parsed command line.
        project: The caller's project (``--project`` wins over it); None: located.
    """
    if args.project or project is None:
        project = Project.locate(args.project, start=setup_dir)
    overrides = parse_overrides(args.set)
    if args.fold is not None:
        overrides["data.fold"] = args.fold
    if args.channels:
        overrides["data.channels"] = args.channels
        overrides["net.in_channels"] = len(args.channels)
    names = {"data.fold": "--fold", "data.channels": "--channels", "net.in_channels": "--channels"}
    config = load_setup_config(setup_dir / "config.yaml", overrides, project, names)
    run_dir = (Path(args.out) if args.out
               else default_run_dir(setup_dir, args.channels, args.fold, project))  # fmt: skip
    return config, run_dir, project


def mknet_main(
    setup_dir: Path | str, argv: Sequence[str] | None = None, project: Project | None = None
) -> int:
    """``mknet.py``: print the network summary and parameter count, write net_config.json.

    Args:
        setup_dir: The setup folder (holding ``config.yaml``).
        argv: Arguments (default: ``sys.argv[1:]``).
        project: The project (``--project`` wins); None = located from the setup folder.
    """
    from cellblock.nets.models import build_net, net_config_json, net_summary
    from cellblock.nets.netconfig import NetConfig

    setup_dir = Path(setup_dir).resolve()
    args = _parser(setup_dir, train=False).parse_args(argv)
    config, run_dir, _ = _resolve(setup_dir, args, project)
    cfg = NetConfig.from_dict(config["net"])
    net = build_net(cfg)
    print(net_summary(net, (cfg.in_channels, cfg.input_size, cfg.input_size)))
    target = run_dir / "net_config.json"
    atomic_write_text(target, json.dumps(net_config_json(cfg), indent=2) + "\n")
    print(f"wrote {target}")
    return 0


def _train(
    config: dict[str, Any],
    data: str,
    run_dir: Path,
    *,
    args: argparse.Namespace,
    stop: threading.Event | None,
    setup: str,
    setup_dir: Path,
) -> dict[str, Any]:
    """Write ``net_config.json`` (rank 0) and train; arguments as in :func:`train_main`.

    Args:
        config: The resolved config.
        data: The packed dataset.
        run_dir: The run folder (its lock held by the caller).
        args: The parsed command line (iterations, ``--init-from``).
        stop: See :func:`train_main`.
        setup: The setup's name, for ``run.json``.
        setup_dir: The setup folder, for ``run.json``.
    """
    from cellblock.nets.models import net_config_json
    from cellblock.nets.netconfig import NetConfig
    from cellblock.training.distributed import DistEnv
    from cellblock.training.loop import train

    if DistEnv.from_env().is_main:  # the other ranks write nothing
        net_json = json.dumps(net_config_json(NetConfig.from_dict(config["net"])), indent=2)
        atomic_write_text(run_dir / "net_config.json", net_json + "\n")
    return train(config, data, run_dir, args.iterations, init_from=args.init_from, stop=stop,
                 setup=setup, setup_dir=str(setup_dir))  # fmt: skip


def train_main(
    setup_dir: Path | str,
    argv: Sequence[str] | None = None,
    stop: threading.Event | None = None,
    project: Project | None = None,
) -> int:
    """``train.py N``: train the setup up to iteration N, resuming its run folder.

    Args:
        setup_dir: The setup folder (holding ``config.yaml``).
        argv: Arguments (default: ``sys.argv[1:]``).
        stop: Checkpoint and return early when set (preemption; see ``training.loop``).
        project: The project (``--project`` wins); None = located from the setup folder.

    Raises:
        FolderBusyError: Another process is writing the run folder (``RUN/train.lock``).
    """
    setup_dir = Path(setup_dir).resolve()
    args = _parser(setup_dir, train=True).parse_args(argv)
    if args.iterations < 1:
        raise ConfigError(f"iterations: need at least 1, got {args.iterations}")
    config, run_dir, project = _resolve(setup_dir, args, project)
    data = args.data
    if data is None:
        recorded = run_dir / "run.json"
        if not recorded.is_file():
            raise UserError(f"--data is needed: {run_dir} has no run.json naming a dataset")
        data = json.loads(recorded.read_text())["dataset"]
    if not Path(data).is_dir():
        raise UserError(f"--data {data}: no such packed dataset folder")
    with run_lock(run_dir), writing(run_dir):  # a full disk names the run folder
        result = _train(config, data, run_dir, args=args, stop=stop,
                        setup=project.setup_name(setup_dir), setup_dir=setup_dir)  # fmt: skip
    if result["stopped"]:
        print(f"{run_dir}: stopped at iteration {result['iteration']} (checkpointed)")
    elif result["trained"] == 0:
        print(f"{run_dir}: already at iteration {result['iteration']}; nothing to do")
    elif result["val"]:
        v = result["val"]
        print(
            f"{run_dir}: iteration {result['iteration']}; validation accuracy on treatment "
            f"wells {v['treatment_accuracy']:.3f}, top-3 {v['treatment_top3']:.3f} "
            f"({v['n_treatment']} treatment items; controls {v['control_accuracy']:.3f}, all "
            f"{v['accuracy']:.3f} of {v['n']} held-out items)"
        )
    else:
        print(f"{run_dir}: iteration {result['iteration']}; no validation (data.val_experiments "
              "is empty): 04_ensemble/ensemble.py scores the held-out plates")  # fmt: skip
    return 0
