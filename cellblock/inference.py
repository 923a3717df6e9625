"""Prediction with a trained run: the checkpoint loaded once, inputs as in training, TTA.

    predictor = Predictor(run_checkpoint("runs/synthetic/tiny"), PackedDataset(data), "flips")
    logits, embeddings = predictor.predict_wells("HEPG2-03", 1, [(1, 1), (1, 2)])

Inputs are exactly what training saw: ``SiteDataset`` reads each site's uint8 pixels
and the ``BatchNormalizer`` of the run's ``data`` config (same mode, statistics, channel
subset, std floor) normalizes the batch on the device. Every site is predicted on its own, whatever
``data.unit`` the run trained with (a well unit flattens its sites into the batch
too); the well's answer is combined downstream. Test-time augmentation runs the
network on several dihedral transforms of each site and averages logits and
embeddings. On CUDA the network runs in bf16 autocast with channels-last tensors.

A run trained with ``data.batch_by: plate`` (or ``experiment``) predicts each plate with
BatchNorm statistics estimated on that plate's sites (``cellblock.nets.bnstats``), over the
same TTA views, in batches of the run's own ``train.batch_size`` (cut by ``even_spans``,
as validation does): never the prediction's ``batch_size``. Given ``stats_dir``, the
estimate is made once per plate for every process predicting into that folder. So the
answer does not depend on how the prediction runs: batch size, workers, blocks.

Keeping a GPU fed: ``readers`` threads decode sites ahead of the network, across blocks
(``read_wells`` starts a block's reads; ``predict_read`` computes it), at most two
batches ahead per block; ``compile`` runs the network through ``torch.compile`` with
one batch shape (the last batch padded), so it compiles once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cellblock.data.augment import d4
from cellblock.data.dataset import SiteDataset
from cellblock.data.loader import SiteReads, even_spans
from cellblock.data.normalize import Normalizer
from cellblock.errors import UserError
from cellblock.nets.bnstats import (
    Buffers,
    SharedStatistics,
    estimate_bn_stats,
    using_bn_buffers,
)
from cellblock.nets.models import Net, build_net
from cellblock.precision import autocast, autocast_dtype, device_precision
from cellblock.runs import check_channels, check_finite_weights, class_ids, inference_config
from cellblock.screen.plates import plate_key
from cellblock.store.packed import PackedDataset
from cellblock.training.checkpoint import load_checkpoint
from cellblock.tta import tta_transforms

__all__ = ["NonFiniteOutputError", "Predictor", "WellReads", "cpus_given"]

log = logging.getLogger(__name__)

# BatchNorm statistics at prediction: the trained ones, or estimated per plate/experiment
BN_STATS = ("auto", "trained", "plate", "experiment")


class NonFiniteOutputError(UserError):
    """The network answered NaN or infinity (or more than float16 holds) for a site."""


def cpus_given() -> int:
    """The CPUs this process may use: its affinity mask, capped by SLURM's allotment."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return max(1, min(cpus or 1, int(slurm) if slurm.isdigit() and int(slurm) > 0 else 1 << 30))


@dataclass
class WellReads:
    """Some wells of one plate whose sites are being read (``Predictor.read_wells``).

    Args:
        experiment: The experiment.
        plate: 1-based plate number.
        n_wells: Wells asked for.
        where: ``(well position, site - 1)`` of each read site, in read order.
        reads: The sites, read ahead.
    """

    experiment: str
    plate: int
    n_wells: int
    where: list[tuple[int, int]]
    reads: SiteReads


def _well_rows(table: pd.DataFrame) -> dict[tuple[str, int, int, int], list]:
    """Site-table labels of each well ``(experiment, plate, row, col)``, in site order."""
    ordered = table.sort_values(["experiment", "plate", "row", "col", "site"], kind="stable")
    keys = zip(ordered["experiment"], ordered["plate"], ordered["row"], ordered["col"],
               strict=True)  # fmt: skip
    rows: dict[tuple[str, int, int, int], list] = {}
    for key, label in zip(keys, ordered.index, strict=True):
        exp, plate, row, col = key
        rows.setdefault((str(exp), int(plate), int(row), int(col)), []).append(label)
    return rows


class Predictor:
    """A run's network, ready to predict sites of one packed dataset.

    Args:
        checkpoint: The checkpoint file (``run_checkpoint``).
        packed: The dataset to predict.
        tta: ``"none"``, ``"flips"`` or ``"d4"``: logits and embeddings are averaged
            over these transforms of each site.
        batch_size: Sites per forward pass.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        readers: Threads reading and decoding sites ahead of the network (0 = read
            in this thread). They overlap IO with compute on a GPU; None = the CPUs
            this process was given (``cpus_given``) less two (its main thread and the
            chunk writer) on CUDA, 0 on CPU, where the cores
            are busy with the network already.
        bn_stats: BatchNorm statistics: ``"trained"`` (stored in the checkpoint),
            ``"plate"`` or ``"experiment"`` (estimated on all sites of the plate or
            experiment being predicted); ``"auto"`` = the run's ``data.batch_by``, or
            ``"trained"`` when it trained on mixed batches.
        stats_dir: Where estimated statistics are shared (``PRED/bnstats``): each
            plate is estimated once for every predictor given the same folder. None =
            this predictor only.
        compile: Run the network through ``torch.compile`` (one batch shape).
    """

    def __init__(
        self,
        checkpoint: Path | str,
        packed: PackedDataset,
        tta: str = "none",
        batch_size: int = 64,
        *,
        device: str = "auto",
        readers: int | None = None,
        bn_stats: str = "auto",
        stats_dir: Path | str | None = None,
        compile: bool = False,
    ):
        if batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {batch_size}")
        path = Path(checkpoint)
        state = load_checkpoint(path)
        check_finite_weights(state, path)
        cfg = inference_config(state, path)
        self.checkpoint, self.iteration, self.config = path, int(state["iteration"]), cfg
        self.packed, self.batch_size = packed, batch_size
        self.channels = check_channels(cfg, packed, str(path))
        self.transforms = tta_transforms(tta, packed.info.image_size)
        self.tta = tta
        self.classes = class_ids(cfg, packed)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        cuda = self.channels_last = self.device.type == "cuda"  # NHWC: fast on tensor cores
        self.readers = (max(1, cpus_given() - 2) if cuda else 0) if readers is None else readers
        if self.readers < 0:
            raise UserError(f"--readers must be at least 0, got {self.readers}")
        self._pool = ThreadPoolExecutor(self.readers, "read") if self.readers else None
        self.amp = autocast_dtype(device_precision("auto", self.device))  # training's rule
        data = cfg.data
        self.data_config = data.replace(unit="site")  # sites, whatever unit trained
        self.normalizer = Normalizer(
            packed,
            data.normalization,
            data.stats_from,
            channels=self.channels,
            min_std=data.min_std,
        )
        self.normalize = self.normalizer.batch_normalizer(packed.metadata).to(self.device)
        net = build_net(cfg.net)
        net.load_state_dict(state["model"])
        memory = torch.channels_last if self.channels_last else torch.preserve_format
        # torch accepts memory_format (Module.to's typed overloads leave it out)
        self.net: Net = net.eval().to(self.device, memory_format=memory)  # type: ignore[call-overload]
        self.embedding_dim = net.embedding_dim
        self.compiled = compile
        # one batch shape (the last batch padded): compiled once, never recompiled per size
        self.model = torch.compile(self.net, dynamic=False) if compile else self.net
        if bn_stats not in BN_STATS:
            raise UserError(f"bn_stats {bn_stats!r}: expected one of {', '.join(BN_STATS)}")
        if bn_stats == "auto":
            bn_stats = data.batch_by or "trained"
        self.bn_stats = bn_stats
        # the estimate's batches: what training normalized over, never ``batch_size``
        self.bn_batch = cfg.train.batch_size * (packed.info.n_sites if data.unit == "well" else 1)
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        source = {
            "checkpoint": str(path.resolve()),
            "sha256": digest,
            "tta": tta,
            "bn_stats": bn_stats,
            "batch": self.bn_batch,
            "dataset": str(Path(packed.path).resolve()),
        }
        self.statistics = SharedStatistics(stats_dir, source)
        table = packed.metadata
        # labels are not needed to predict: -1 everywhere spares SiteDataset computing them
        self._no_labels = pd.Series(-1, index=table.index, dtype=np.int64)
        self._well_rows = _well_rows(table)
        self._site = table["site"]
        log.info("%s: iteration %d on %s, TTA %s (%d views), batch %d, BatchNorm statistics %s",
                 path, self.iteration, self.device, tta, len(self.transforms), batch_size,
                 bn_stats)  # fmt: skip

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def _reads(self, rows: Sequence | pd.Index) -> SiteReads:
        """The sites of ``rows``, read ahead (two batches) by the reader threads."""
        dataset = SiteDataset(
            self.packed,
            pd.Index(rows),
            self.data_config,
            self._no_labels,
            normalizer=self.normalizer,
            normalize=False,
        )
        return SiteReads(dataset, self._pool, 2 * self.batch_size)

    def _inputs(self, images: np.ndarray, index: np.ndarray) -> torch.Tensor:
        """A uint8 batch as the network's input: on the device, normalized, its layout."""
        x = torch.from_numpy(images).to(self.device, non_blocking=True)
        x = self.normalize(x, torch.from_numpy(index))
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.inference_mode()
    def _forward(
        self, images: np.ndarray, index: np.ndarray, transforms: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        transforms = self.transforms if transforms is None else transforms
        x = self._inputs(images, index)
        n = len(x)
        if self.compiled and n < self.batch_size:  # eval mode: padding changes no other row
            x = torch.cat([x, x.new_zeros((self.batch_size - n, *x.shape[1:]))])
        logits = embeddings = None
        for k in transforms:
            with autocast(self.device, self.amp):
                out = self.model(d4(x, k) if k else x)
            lg, em = out.logits[:n].float(), out.embeddings[:n].float()
            logits = lg if logits is None else logits + lg
            embeddings = em if embeddings is None else embeddings + em
        assert logits is not None and embeddings is not None, "no TTA transform"
        return logits / len(transforms), embeddings / len(transforms)

    def predict_rows(
        self, rows: Sequence | pd.Index, transforms: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits and embeddings of site-table rows.

        Args:
            rows: Index labels of ``packed.metadata``.
            transforms: Dihedral elements to average over instead of the TTA's (``d4``
                numbering; ``(k,)`` gives the view ``k`` alone, as the rotation benchmark
                compares them).

        Returns:
            ``(logits (n, n_classes), embeddings (n, D))``, float32, in ``rows`` order.
        """
        rows = pd.Index(rows)
        if self.bn_stats == "trained" or len(rows) == 0:
            return self._predict(rows, transforms)
        logits = np.empty((len(rows), self.n_classes), np.float32)
        embeddings = np.empty((len(rows), self.embedding_dim), np.float32)
        keys = self._bn_keys(rows)
        for key in dict.fromkeys(keys):
            where = np.flatnonzero([k == key for k in keys])
            with using_bn_buffers(self.net, self._group_stats(key)):
                logits[where], embeddings[where] = self._predict(rows[where], transforms)
        return logits, embeddings

    def _bn_keys(self, rows: pd.Index) -> list[tuple]:
        """The statistics group of each row: ``(experiment, plate)`` or ``(experiment,)``."""
        table = self.packed.metadata.loc[rows]
        if self.bn_stats == "experiment":
            return [(str(e),) for e in table["experiment"]]
        return list(zip(table["experiment"].astype(str), table["plate"].astype(int), strict=True))

    def _group_stats(self, key: tuple) -> Buffers:
        """BatchNorm statistics of every site of one plate (experiment), estimated once
        (and shared through ``stats_dir``)."""
        name = plate_key(key[0], key[1]) if len(key) == 2 else str(key[0])
        return self.statistics.get(name, lambda: self._estimate(key))

    def _estimate(self, key: tuple) -> tuple[Buffers, int]:
        """``(statistics, sites)`` of a plate (experiment): its sites in site-table order,
        in ``even_spans`` batches of ``bn_batch``, each over every TTA view."""
        table = self.packed.metadata
        chosen = table["experiment"].astype(str) == key[0]
        if len(key) == 2:
            chosen &= table["plate"].astype(int) == key[1]
        rows = table.index[chosen.to_numpy()]
        reads = self._reads(rows)
        views = self._views(reads, even_spans(len(rows), self.bn_batch))
        with autocast(self.device, self.amp):
            return estimate_bn_stats(self.net, views), len(rows)

    def _views(self, reads: SiteReads, spans: list[tuple[int, int]]) -> Iterator[torch.Tensor]:
        """Every TTA view of every batch of ``reads``, normalized, on the device."""
        for images, index in reads.batches(spans):
            x = self._inputs(images, index)
            for k in self.transforms:
                yield d4(x, k) if k else x

    def _predict(
        self, rows: Sequence | pd.Index, transforms: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits and embeddings of rows with the network's current statistics."""
        return self._compute(self._reads(rows), transforms)

    def _compute(
        self, reads: SiteReads, transforms: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits and embeddings of every site of ``reads``, in batches of ``batch_size``."""
        n = len(reads)
        logits = np.empty((n, self.n_classes), np.float32)
        embeddings = np.empty((n, self.embedding_dim), np.float32)
        spans = [(s, min(s + self.batch_size, n)) for s in range(0, n, self.batch_size)]
        for (a, b), (batch, index) in zip(spans, reads.batches(spans), strict=True):
            lg, em = self._forward(batch, index, transforms)
            logits[a:b], embeddings[a:b] = lg.cpu().numpy(), em.cpu().numpy()
        return logits, embeddings

    def read_wells(
        self, experiment: str, plate: int, wells: Sequence[tuple[int, int]]
    ) -> WellReads:
        """Start reading every site of some wells of one plate (``predict_read`` computes
        them): the next block's sites load while the network runs this one.

        Args:
            experiment: e.g. ``"HEPG2-03"``.
            plate: 1-based plate number.
            wells: 0-based ``(row, col)`` of each well.

        Raises:
            UserError: A well has no sites in the dataset.
        """
        rows, where = [], []
        for i, (row, col) in enumerate(wells):
            labels = self._well_rows.get((str(experiment), int(plate), int(row), int(col)))
            if not labels:
                name = self.packed.info.plate_format.well_name(int(row), int(col))
                raise UserError(
                    f"{self.packed.path}: no sites of {plate_key(experiment, plate)} {name}"
                )
            rows += labels
            where += [(i, int(self._site[label]) - 1) for label in labels]
        return WellReads(str(experiment), int(plate), len(wells), where, self._reads(rows))

    def predict_read(self, wells: WellReads) -> tuple[np.ndarray, np.ndarray]:
        """Logits and embeddings of wells being read (``read_wells``).

        Returns:
            ``(logits (n_wells, S, n_classes), embeddings (n_wells, S, D))`` float32,
            ``S`` = sites per well of the dataset; NaN where a well lacks a site.

        Raises:
            NonFiniteOutputError: A site's logits or embeddings are not finite (or its
                embeddings overflow float16, the store's type); names the checkpoint.
        """
        if self.bn_stats == "trained" or not wells.where:
            site_logits, site_embeddings = self._compute(wells.reads)
        else:
            group = (
                (wells.experiment,)
                if self.bn_stats == "experiment"
                else (wells.experiment, wells.plate)
            )
            with using_bn_buffers(self.net, self._group_stats(group)):
                site_logits, site_embeddings = self._compute(wells.reads)
        self._check_finite(wells, site_logits, site_embeddings)
        n_sites = self.packed.info.n_sites
        logits = np.full((wells.n_wells, n_sites, self.n_classes), np.nan, np.float32)
        embeddings = np.full((wells.n_wells, n_sites, self.embedding_dim), np.nan, np.float32)
        if wells.where:
            w, s = np.array(wells.where).T
            logits[w, s], embeddings[w, s] = site_logits, site_embeddings
        return logits, embeddings

    def _check_finite(self, wells: WellReads, logits: np.ndarray, embeddings: np.ndarray) -> None:
        """Raise ``NonFiniteOutputError`` unless every site's outputs can be stored as they are."""
        fits = np.isfinite(logits).all(1) & (np.abs(embeddings) <= np.finfo(np.float16).max).all(1)
        if fits.all():
            return
        first = int(np.argmin(fits))
        site = wells.where[first][1] + 1
        label = wells.reads.dataset.index[first]
        table = self.packed.metadata
        row, col = int(table.at[label, "row"]), int(table.at[label, "col"])
        well = self.packed.info.plate_format.well_name(row, col)
        key = plate_key(wells.experiment, wells.plate)
        raise NonFiniteOutputError(
            f"{self.checkpoint}: {int((~fits).sum())} sites of {key} have NaN or infinite "
            f"logits or embeddings (first: well {well} site {site}); this checkpoint's "
            "outputs overflow: choose another (--iteration) or retrain"
        )

    def predict_wells(
        self, experiment: str, plate: int, wells: Sequence[tuple[int, int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits and embeddings of every site of some wells of one plate.

        Args:
            experiment: e.g. ``"HEPG2-03"``.
            plate: 1-based plate number.
            wells: 0-based ``(row, col)`` of each well.

        Returns:
            ``(logits (n_wells, S, n_classes), embeddings (n_wells, S, D))`` float32,
            ``S`` = sites per well of the dataset; NaN where a well lacks a site.

        Raises:
            UserError: A well has no sites in the dataset.
            NonFiniteOutputError: A site's outputs are not finite.
        """
        return self.predict_read(self.read_wells(experiment, plate, wells))

    def close(self) -> None:
        """Stop the reader threads (a predictor is usable until then)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
