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
BatchNorm statistics estimated on that plate's sites (``cellblock.nets.bnstats``), once per
plate and process, over the same TTA views.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cellblock.data.augment import d4
from cellblock.data.dataset import SiteDataset
from cellblock.data.loader import read_batches
from cellblock.data.normalize import Normalizer
from cellblock.errors import UserError
from cellblock.nets.bnstats import Buffers, estimate_bn_stats, using_bn_buffers
from cellblock.nets.models import Net, build_net
from cellblock.runs import check_channels, class_ids, inference_config
from cellblock.screen.plates import plate_key
from cellblock.store.packed import PackedDataset
from cellblock.training.checkpoint import load_checkpoint
from cellblock.tta import tta_transforms

__all__ = ["Predictor"]

log = logging.getLogger(__name__)

# BatchNorm statistics at prediction: the trained ones, or estimated per plate/experiment
BN_STATS = ("auto", "trained", "plate", "experiment")


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
        readers: Threads reading and normalizing sites ahead of the network (0 = read
            in this thread). They overlap IO with compute on a GPU; None = 4 on CUDA,
            0 on CPU, where the cores are busy with the network already.
        bn_stats: BatchNorm statistics: ``"trained"`` (stored in the checkpoint),
            ``"plate"`` or ``"experiment"`` (estimated on all sites of the plate or
            experiment being predicted); ``"auto"`` = the run's ``data.batch_by``, or
            ``"trained"`` when it trained on mixed batches.
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
    ):
        if batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {batch_size}")
        path = Path(checkpoint)
        state = load_checkpoint(path)
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
        cuda = self.device.type == "cuda"
        self.readers = (4 if cuda else 0) if readers is None else readers
        self.amp = self.channels_last = cuda  # bf16 + NHWC: the fast path of tensor cores
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
        if bn_stats not in BN_STATS:
            raise UserError(f"bn_stats {bn_stats!r}: expected one of {', '.join(BN_STATS)}")
        if bn_stats == "auto":
            bn_stats = data.batch_by or "trained"
        self.bn_stats = bn_stats
        self._bn_cache: dict[tuple, Buffers] = {}
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

    def _batches(
        self, dataset: SiteDataset, even: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """uint8 batches of ``dataset`` in order (``read_batches`` with this predictor's
        batch size and reader threads)."""
        return read_batches(dataset, self.batch_size, readers=self.readers, even=even)

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
        logits = embeddings = None
        for k in transforms:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                out = self.net(d4(x, k) if k else x)
            lg, em = out.logits.float(), out.embeddings.float()
            logits = lg if logits is None else logits + lg
            embeddings = em if embeddings is None else embeddings + em
        n = len(transforms)
        assert logits is not None and embeddings is not None, "no TTA transform"
        return logits / n, embeddings / n

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
        """BatchNorm statistics of every site of one plate (experiment), estimated once."""
        if key not in self._bn_cache:
            table = self.packed.metadata
            chosen = table["experiment"].astype(str) == key[0]
            if len(key) == 2:
                chosen &= table["plate"].astype(int) == key[1]
            rows = table.index[chosen.to_numpy()]
            dataset = SiteDataset(self.packed, rows, self.data_config, self._no_labels,
                                  normalizer=self.normalizer, normalize=False)  # fmt: skip
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                self._bn_cache[key] = estimate_bn_stats(self.net, self._views(dataset))
            log.debug("BatchNorm statistics of %s from %d sites x %d views",
                     "/".join(map(str, key)), len(rows), len(self.transforms))  # fmt: skip
        return self._bn_cache[key]

    def _views(self, dataset: SiteDataset) -> Iterator[torch.Tensor]:
        """Every TTA view of every batch of ``dataset``, normalized, on the device."""
        for images, index in self._batches(dataset, even=True):
            x = self._inputs(images, index)
            for k in self.transforms:
                yield d4(x, k) if k else x

    def _predict(
        self, rows: Sequence | pd.Index, transforms: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits and embeddings of rows with the network's current statistics."""
        rows = pd.Index(rows)
        logits = np.empty((len(rows), self.n_classes), np.float32)
        embeddings = np.empty((len(rows), self.embedding_dim), np.float32)
        if len(rows) == 0:
            return logits, embeddings
        dataset = SiteDataset(self.packed, rows, self.data_config, self._no_labels,
                              normalizer=self.normalizer, normalize=False)  # fmt: skip
        at = 0
        for batch, index in self._batches(dataset):
            lg, em = self._forward(batch, index, transforms)
            logits[at : at + len(batch)] = lg.cpu().numpy()
            embeddings[at : at + len(batch)] = em.cpu().numpy()
            at += len(batch)
        return logits, embeddings

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
        """
        n_sites = self.packed.info.n_sites
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
        site_logits, site_embeddings = self.predict_rows(rows)
        logits = np.full((len(wells), n_sites, self.n_classes), np.nan, np.float32)
        embeddings = np.full((len(wells), n_sites, self.embedding_dim), np.nan, np.float32)
        if where:
            w, s = np.array(where).T
            logits[w, s], embeddings[w, s] = site_logits, site_embeddings
        return logits, embeddings
