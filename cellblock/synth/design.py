"""The experimental design of a synthetic screen: what is in which well, and why it looks so.

The structure follows RxRx1:

* classes ``0..N-1`` are treatments (siRNAs), ``N..N+P-1`` positive controls, ``N+P``
  the negative control;
* the N treatments fall into 4 disjoint groups of N/4; each plate of an experiment
  carries exactly one group (each treatment once) plus every control, and the 4
  groups rotate across the experiment's 4 plates (experiment ``e``: plate ``p``
  holds group ``(p - 1 + shift_e) % 4``);
* well positions are shuffled per plate over the inner wells;
* optionally (``sirnas_per_gene``, ``genes_per_pathway``) known relationships: the
  treatments fall into genes of ``sirnas_per_gene`` siRNAs and the genes into pathways;
  an siRNA's phenotype is ``gene_share`` its gene's and the rest its own, a gene's is
  ``pathway_share`` its pathway's and the rest its own (each mixed phenotype keeps the
  length of the siRNA's own), as siRNAs of one gene share most of a phenotype and genes
  of one complex some. Their draws come from a stream of their own, so the default
  screen's bytes do not change;
* ``negative_controls`` negative-control wells per plate (RxRx1: 1).

Randomness is keyed, not sequential (``numpy.random.SeedSequence(seed, spawn_key)``):
an experiment, plate or site draws the same numbers whether the whole dataset or a
subset is generated, in any process, in any order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cellblock.screen.plates import PLATE_FORMATS, PlateFormat
from cellblock.synth.config import CELL_TYPES, SynthConfig
from cellblock.synth.traits import N_TRAITS

__all__ = ["Design", "PlateDesign", "keyed_rng"]

# Spawn-key namespaces, so that streams of different purposes never collide.
_GLOBAL, _EXPERIMENT, _PLATE, _SITE, _RELATIONS = 0, 1, 2, 3, 4


def _triple(values: np.ndarray) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return a, b, c


def keyed_rng(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for ``key`` under ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))


@dataclass(frozen=True)
class PlateDesign:
    """One plate: its wells, their labels, and its batch effect parameters.

    Args:
        experiment: e.g. ``"HEPG2-01"``.
        exp_index: Position of the experiment in the full design (keys its randomness).
        plate: 1-based plate number.
        cell_type: e.g. ``"HEPG2"``.
        split: ``"train"`` or ``"test"``.
        group: Treatment group (0-3) this plate carries.
        wells: ``{well name: class label}``.
        gain: Per-channel multiplicative intensity gain (experiment x plate).
        offset: Per-channel additive background, in grey levels.
        illumination: ``(tilt_x, tilt_y, vignette)`` of the uneven illumination field.
        noise: Std of the additive camera noise, in grey levels.
        morph_drift: Per-trait log shift of the experiment (a batch effect on morphology).
    """

    experiment: str
    exp_index: int
    plate: int
    cell_type: str
    split: str
    group: int
    wells: dict[str, int]
    gain: np.ndarray
    offset: np.ndarray
    illumination: tuple[float, float, float]
    noise: float
    morph_drift: np.ndarray


class Design:
    """The full design of a synthetic screen for ``config``."""

    def __init__(self, config: SynthConfig):
        self.config = config
        n_wells = config.plate_wells
        if n_wells is None:
            n_wells = next(
                (
                    n
                    for n in sorted(PLATE_FORMATS)
                    if len(PlateFormat.from_n_wells(n).inner_wells()) >= config.wells_per_plate
                ),
                None,
            )
            if n_wells is None:
                raise ValueError(f"{config.wells_per_plate} wells per plate fit no plate format")
        self.plate_format = PlateFormat.from_n_wells(n_wells)
        if len(self.plate_format.inner_wells()) < config.wells_per_plate:
            raise ValueError(
                f"{config.wells_per_plate} wells per plate do not fit the inner wells of a "
                f"{n_wells}-well plate"
            )
        rng = keyed_rng(config.seed, _GLOBAL)
        n = config.n_treatments
        # 4 disjoint groups of treatments, each sorted.
        perm = rng.permutation(n)
        self.groups = [np.sort(perm[g::4]) for g in range(4)]
        # Phenotypes: a signed log shift per (class, trait), in units of cell variation.
        self.phenotypes = np.zeros((config.n_classes, N_TRAITS))
        for label in range(config.n_classes - 1):  # the negative control stays at zero
            is_control = label >= n
            k = config.traits_per_treatment + (2 if is_control else 0)
            traits = rng.choice(N_TRAITS, size=min(k, N_TRAITS), replace=False)
            size = config.effect_size * (config.control_effect if is_control else 1.0)
            signs = rng.choice([-1.0, 1.0], size=len(traits))
            self.phenotypes[label, traits] = signs * size * rng.uniform(0.7, 1.3, len(traits))
        self.genes = np.arange(n)  # target gene of each treatment
        self.pathways = np.arange(n)  # pathway of each gene
        if config.has_relationships:
            self._plant_relationships()
        self.phenotypes *= config.cell_variation
        # Cell types respond to the same siRNA with different strength (as in RxRx1).
        self.sensitivity = rng.uniform(0.6, 1.4, size=(len(CELL_TYPES), config.n_classes, 1))
        tests = config.test_experiments()
        self.experiments: list[tuple[str, str, str]] = [
            (name, cell_type, "test" if name in tests else "train")
            for cell_type, names in config.experiments().items()
            for name in names
        ]

    def _sparse_phenotypes(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` phenotypes drawn as a treatment's: a few traits, signed, +-30%."""
        cfg = self.config
        out = np.zeros((count, N_TRAITS))
        for i in range(count):
            traits = rng.choice(N_TRAITS, size=min(cfg.traits_per_treatment, N_TRAITS),
                                replace=False)  # fmt: skip
            signs = rng.choice([-1.0, 1.0], size=len(traits))
            out[i, traits] = signs * cfg.effect_size * rng.uniform(0.7, 1.3, len(traits))
        return out

    def _plant_relationships(self) -> None:
        """Genes and pathways (module docstring), mixed into the treatments' phenotypes."""
        cfg, n = self.config, self.config.n_treatments
        rng = keyed_rng(cfg.seed, _RELATIONS)
        self.genes = np.empty(n, dtype=np.int64)
        self.genes[rng.permutation(n)] = np.arange(n) // cfg.sirnas_per_gene
        n_genes = cfg.n_genes
        self.pathways = np.empty(n_genes, dtype=np.int64)
        self.pathways[rng.permutation(n_genes)] = np.arange(n_genes) // cfg.genes_per_pathway
        pathway = self._sparse_phenotypes(rng, n_genes // cfg.genes_per_pathway)
        gene = self._sparse_phenotypes(rng, n_genes)
        gene = (1 - cfg.pathway_share) * gene + cfg.pathway_share * pathway[self.pathways]
        own = self.phenotypes[:n]
        mixed = (1 - cfg.gene_share) * own + cfg.gene_share * gene[self.genes]
        length = np.linalg.norm(own, axis=1, keepdims=True)
        self.phenotypes[:n] = (
            mixed * length / np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-12)
        )

    def relationships(self) -> pd.DataFrame:
        """Known pairs, as CORUM/StringDB tables list them: ``sirna_a < sirna_b``.

        ``relationship`` is ``same_gene`` (two siRNAs of one target) or ``same_pathway``
        (siRNAs of two genes of one pathway). Empty when none were planted.
        """
        rows = []
        n = self.config.n_treatments
        pathway = self.pathways[self.genes]
        for a in range(n):
            for b in range(a + 1, n):
                if self.genes[a] == self.genes[b]:
                    rows.append((a, b, "same_gene"))
                elif pathway[a] == pathway[b]:
                    rows.append((a, b, "same_pathway"))
        return pd.DataFrame(rows, columns=["sirna_a", "sirna_b", "relationship"])

    @property
    def experiment_names(self) -> list[str]:
        return [name for name, _, _ in self.experiments]

    @property
    def controls(self) -> list[int]:
        """Positive controls then the negative control."""
        return list(range(self.config.n_treatments, self.config.n_classes))

    def well_type(self, label: int) -> str:
        if label < self.config.n_treatments:
            return "treatment"
        return "negative_control" if label == self.config.n_classes - 1 else "positive_control"

    def plates(self, experiments: list[str] | None = None) -> list[PlateDesign]:
        """Designs of every plate of ``experiments`` (default: all), in order."""
        known = self.experiment_names
        unknown = sorted(set(experiments or []) - set(known))
        if unknown:
            raise ValueError(f"unknown experiment(s) {unknown}; this design has {known}")
        return [
            self._plate(i, plate)
            for i, (name, _, _) in enumerate(self.experiments)
            if experiments is None or name in experiments
            for plate in range(1, 5)
        ]

    def _plate(self, exp_index: int, plate: int) -> PlateDesign:
        cfg, strength = self.config, self.config.batch_strength
        name, cell_type, split = self.experiments[exp_index]
        exp_rng = keyed_rng(cfg.seed, _EXPERIMENT, exp_index)
        shift = int(exp_rng.integers(4))
        exp_gain = np.exp(exp_rng.normal(0.0, 0.35 * strength, 6))
        morph_drift = exp_rng.normal(0.0, 0.25 * cfg.cell_variation * strength, N_TRAITS)
        rng = keyed_rng(cfg.seed, _PLATE, exp_index, plate)
        group = (plate - 1 + shift) % 4
        extra = [self.config.n_classes - 1] * (cfg.negative_controls - 1)
        labels = np.concatenate([self.groups[group], self.controls, extra]).astype(np.int64)
        inner = self.plate_format.inner_wells()
        chosen = sorted(rng.choice(len(inner), size=len(labels), replace=False))
        wells = {inner[i]: int(lab) for i, lab in zip(chosen, rng.permutation(labels), strict=True)}
        return PlateDesign(
            experiment=name,
            exp_index=exp_index,
            plate=plate,
            cell_type=cell_type,
            split=split,
            group=group,
            wells=dict(sorted(wells.items(), key=lambda kv: self.plate_format.well_index(kv[0]))),
            gain=exp_gain * np.exp(rng.normal(0.0, 0.2 * strength, 6)),
            offset=rng.uniform(2.0, 2.0 + 14.0 * strength, 6),
            illumination=_triple(rng.normal(0.0, 0.15 * strength, 3)),
            noise=float(0.15 + 0.35 * strength * rng.uniform(0.5, 1.5)),
            morph_drift=morph_drift,
        )

    def site_rng(self, plate: PlateDesign, well: str, site: int) -> np.random.Generator:
        row, col = self.plate_format.well_index(well)
        return keyed_rng(self.config.seed, _SITE, plate.exp_index, plate.plate, row, col, site)

    def trait_shift(self, plate: PlateDesign, label: int) -> np.ndarray:
        """Mean log shift of every trait for ``label`` on ``plate`` (phenotype + drift)."""
        ct = CELL_TYPES.index(plate.cell_type)
        return self.phenotypes[label] * self.sensitivity[ct, label] + plate.morph_drift
