"""Which site-table rows train and which validate: folds by experiment, held-out experiments.

Batch effects are per experiment, so validation must be on experiments the model
never saw: folds are groups of whole experiments, spread evenly over cell types.
Training rows are ``split == "train"`` rows; test rows join only through control
pretraining, pseudo labels, or ``use_test_labels``. Whenever test rows join, their
control wells do too: RxRx1 publishes test control labels (``test_controls.csv``).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cellblock.data.config import DataConfig
from cellblock.errors import ConfigError

__all__ = ["assign_folds", "select_rows", "validation_experiments"]

log = logging.getLogger(__name__)


def assign_folds(table: pd.DataFrame, n_folds: int, seed: int = 0) -> dict[str, int]:
    """Fold number of every training experiment, balanced over cell types.

    Each cell type's experiments (shuffled with ``seed``) are dealt round-robin into
    the folds, continuing where the previous cell type stopped, so every fold holds
    about the same number of experiments and of each cell type.

    Args:
        table: The site table (``experiment``, ``cell_type``, ``split`` columns).
        n_folds: Number of folds; at most the number of training experiments.
        seed: Seed of the shuffle; the same seed gives the same folds.
    """
    train = table.loc[table["split"] == "train", ["experiment", "cell_type"]].drop_duplicates()
    if train["experiment"].duplicated().any():
        raise ConfigError("folds: an experiment spans several cell types")
    if len(train) < n_folds:
        raise ConfigError(f"n_folds: {n_folds} folds but only {len(train)} training experiments")
    rng = np.random.default_rng(seed)
    folds, position = {}, 0
    for _, group in sorted(train.groupby("cell_type")["experiment"]):
        for exp in rng.permutation(sorted(group)):
            folds[str(exp)] = position % n_folds
            position += 1
    return folds


def validation_experiments(table: pd.DataFrame, config: DataConfig) -> list[str]:
    """The experiments held out for validation by ``config`` (``fold`` or ``val_experiments``).

    Args:
        table: The full site table.
        config: Its ``fold``/``n_folds``/``split_seed`` or ``val_experiments``.
    """
    if config.fold is not None:
        if config.val_experiments:
            raise ConfigError("give either fold or val_experiments, not both")
        folds = assign_folds(table, config.n_folds, config.split_seed)
        return sorted(e for e, f in folds.items() if f == config.fold)
    # A setup names RxRx1's validation experiments; a dataset of a few experiments (as
    # fetch_data.py --experiments gives) validates on those of them it has.
    present = set(table["experiment"])
    chosen = sorted(e for e in config.val_experiments if e in present)
    missing = sorted(set(config.val_experiments) - present)
    if missing and not chosen:
        raise ConfigError(
            f"val_experiments: none of {missing} is in the dataset (it has "
            f"{', '.join(sorted(present))}); set data.val_experiments=[...] to some of them"
        )
    if missing:
        log.warning("val_experiments: %s not in the dataset; validating on %s",
                    ", ".join(missing), ", ".join(chosen))  # fmt: skip
    trained = set(table.loc[table["split"] == "train", "experiment"]) - set(chosen)
    if chosen and not trained:
        raise ConfigError(
            f"val_experiments: {chosen} are all the training experiments the dataset has; "
            "hold out fewer (set data.val_experiments=[...])"
        )
    return chosen


def select_rows(
    table: pd.DataFrame, config: DataConfig, labels: pd.Series
) -> tuple[pd.Index, pd.Index]:
    """Index labels of the training and validation rows of ``table``.

    Args:
        table: The full site table.
        config: Split and selection settings.
        labels: ``make_labels`` output for ``table`` (-1 = unknown: never trained on).

    Returns:
        ``(train, val)`` index labels; validation rows are the labelled rows of the
        validation experiments, which never appear in training.
    """
    val_exps = validation_experiments(table, config)
    in_val = table["experiment"].isin(val_exps)
    labelled = labels.reindex(table.index) >= 0
    if config.controls_only:
        labelled &= table["well_type"] != "treatment"
    # test rows train only when their labels come from somewhere legitimate
    test_ok = config.controls_only or config.pseudo_labels is not None or config.use_test_labels
    allowed = (table["split"] == "train") | (test_ok & (table["split"] == "test"))
    train = table.index[labelled & allowed & ~in_val]
    val = table.index[labelled & in_val]
    if val_exps and len(val) == 0:
        raise ConfigError(f"validation experiments {val_exps} have no labelled rows")
    log.info(
        "rows: %d train, %d val (held out: %s)", len(train), len(val), ", ".join(val_exps) or "-"
    )
    return train, val
