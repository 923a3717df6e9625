"""Run logs: CSV tables and TensorBoard events that survive a resume, and the plot.

``log.csv`` (training: iteration, loss, lr, img_per_s, ...) and ``val.csv``
(validation metrics) are appended one row at a time and flushed. On resume from
iteration ``k``, rows after ``k`` (written by the killed run after its last
checkpoint) are dropped first, so the table reads as one uninterrupted run; the
TensorBoard writer (``RUN/tensorboard``) purges its events after ``k`` the same way.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from cellblock.atomic import atomic_path, atomic_write_text

__all__ = ["CsvLog", "RunLog", "plot_curves"]

log = logging.getLogger(__name__)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # exact: a resumed curve compares equal digit for digit
    return str(value)


def _whole(row: list[str], columns: list[str]) -> bool:
    """A complete row: a power loss can leave a partial last line (``"1"`` of ``"12,..."``)."""
    return len(row) == len(columns) and row[0].isdigit()


class CsvLog:
    """An append-only CSV with an ``iteration`` column, truncated to a resume point.

    Args:
        path: The CSV file.
        resume_from: Drop rows with ``iteration`` above this (0: start afresh).
    """

    def __init__(self, path: Path | str, resume_from: int):
        self.path = Path(path)
        self.columns: list[str] | None = None
        if self.path.is_file() and resume_from > 0:
            with self.path.open(newline="") as f:
                rows = list(csv.reader(f))
            if rows:
                self.columns = rows[0]
                keep = [r for r in rows[1:] if _whole(r, self.columns) and int(r[0]) <= resume_from]
                text = "".join(",".join(r) + "\n" for r in [self.columns, *keep])
                atomic_write_text(self.path, text)
        elif self.path.exists():
            self.path.unlink()

    def write(self, row: dict[str, Any]) -> None:
        """Append ``row`` (its first key must be ``iteration``); the header comes first."""
        if self.columns is None:
            self.columns = list(row)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(",".join(self.columns) + "\n")
        with self.path.open("a") as f:
            f.write(",".join(_fmt(row.get(c, "")) for c in self.columns) + "\n")


class RunLog:
    """Where a run's metrics go: ``log.csv``, ``val.csv`` and TensorBoard.

    Args:
        run_dir: The run folder.
        resume_from: The iteration training continues from (0: a new run).
        tensorboard: Also write TensorBoard events to ``run_dir/tensorboard``.
    """

    def __init__(self, run_dir: Path | str, resume_from: int, tensorboard: bool = True):
        run_dir = Path(run_dir)
        self.train = CsvLog(run_dir / "log.csv", resume_from)
        self.val = CsvLog(run_dir / "val.csv", resume_from)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only if used

            self.writer = SummaryWriter(run_dir / "tensorboard", purge_step=resume_from + 1)

    def _scalars(self, prefix: str, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "iteration" and isinstance(value, int | float):
                self.writer.add_scalar(f"{prefix}/{key}", value, row["iteration"])
        self.writer.flush()

    def log_train(self, row: dict[str, Any]) -> None:
        """One row of training metrics (``iteration`` first)."""
        self.train.write(row)
        self._scalars("train", row)

    def log_val(self, row: dict[str, Any]) -> None:
        """One row of validation metrics (``iteration`` first)."""
        self.val.write(row)
        self._scalars("val", row)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_curves(run_dir: Path | str) -> Path | None:
    """``curves.png``: training and validation loss; validation accuracy on treatment
    wells (and top-3), on control wells, and overall.

    Args:
        run_dir: The run folder with ``log.csv`` (and ``val.csv`` if validated).

    Returns:
        The PNG, or None without a training log.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "log.csv").is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = pd.read_csv(run_dir / "log.csv")
    val_path = run_dir / "val.csv"
    val = pd.read_csv(val_path) if val_path.is_file() else None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(train["iteration"], train["loss"], label="train")
    if val is not None and len(val):
        ax_loss.plot(val["iteration"], val["loss"], "o-", label="validation")
        if "treatment_accuracy" in val:  # what Kaggle scores; controls are far easier
            ax_acc.plot(val["iteration"], val["treatment_accuracy"], "o-", label="treatments")
            ax_acc.plot(val["iteration"], val["treatment_top3"], "o--", label="treatments, top-3")
            ax_acc.plot(val["iteration"], val["control_accuracy"], "s:", label="controls")
        ax_acc.plot(val["iteration"], val["accuracy"], ".-", alpha=0.5, label="all wells")
    ax_loss.set(xlabel="iteration", ylabel="loss", title="loss")
    ax_acc.set(xlabel="iteration", ylabel="accuracy", ylim=(0, 1), title="validation")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    target = run_dir / "curves.png"
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    log.info("wrote %s", target)
    return target
