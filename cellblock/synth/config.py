"""Knobs of the synthetic RxRx1-style dataset, and the two presets.

Every knob is visible here with its default; ``make_synthetic.py`` exposes the
common ones as flags and the rest through ``--set key=value``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cellblock.errors import ConfigError

__all__ = ["CELL_TYPES", "PRESETS", "RXRX1_EXPERIMENTS", "SynthConfig", "preset"]

# RxRx1's four cell types and how many experiments each has (51 in all).
CELL_TYPES = ("HEPG2", "HUVEC", "RPE", "U2OS")
RXRX1_EXPERIMENTS = {"HEPG2": 11, "HUVEC": 24, "RPE": 11, "U2OS": 5}


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of a synthetic dataset. Same config and seed -> same bytes."""

    seed: int = 0  # everything random derives from this
    n_treatments: int = 1108  # siRNA classes 0..N-1; a multiple of 4 (one group per plate)
    n_positive_controls: int = 30  # classes N..N+P-1; then one negative control (N+P)
    experiments_per_cell_type: int | None = None  # None: RxRx1's 11/24/11/5
    test_fraction: float = 0.35  # share of each cell type's experiments held out (RxRx1: 18/51)
    image_size: int = 512  # pixels per side (RxRx1: 512)
    n_sites: int = 2  # imaged sites per well (RxRx1: 2)
    plate_wells: int | None = None  # 96/384/1536; None: smallest plate whose inner wells fit
    effect_size: float = 1.0  # treatment phenotype, in units of cell-to-cell variation
    control_effect: float = 2.5  # positive controls' phenotype relative to a treatment's
    traits_per_treatment: int = 3  # morphological properties one siRNA changes
    batch_strength: float = 1.0  # scales all experiment/plate effects (gain, offset, light, noise)
    cell_variation: float = 0.18  # cell-to-cell std of every (log) trait
    coverage: float = 0.35  # share of the field covered by cells (sets cells per site)
    # Known relationships (benchmarks; off by default, leaving the default bytes unchanged):
    sirnas_per_gene: int = 1  # siRNAs sharing a target gene (consecutive shuffled treatments)
    genes_per_pathway: int = 1  # genes sharing a pathway
    gene_share: float = 0.7  # share of an siRNA's phenotype that is its gene's
    pathway_share: float = 0.5  # share of a gene's phenotype that is its pathway's
    negative_controls: int = 1  # negative-control wells per plate (RxRx1: 1; a null needs more)

    def __post_init__(self) -> None:
        if self.n_treatments < 4 or self.n_treatments % 4:
            raise ConfigError(f"n_treatments={self.n_treatments} must be a positive multiple of 4")
        if self.n_positive_controls < 1:
            raise ConfigError("n_positive_controls must be >= 1")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction={self.test_fraction} must be in [0, 1)")
        if self.image_size < 32:
            raise ConfigError(f"image_size={self.image_size} is too small (>= 32)")
        if self.n_sites < 1:
            raise ConfigError("n_sites must be >= 1")
        if self.experiments_per_cell_type is not None and self.experiments_per_cell_type < 1:
            raise ConfigError("experiments_per_cell_type must be >= 1")
        for name in ("effect_size", "batch_strength", "cell_variation", "coverage"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        for name in ("sirnas_per_gene", "genes_per_pathway", "negative_controls"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.n_treatments % self.sirnas_per_gene:
            raise ConfigError(f"sirnas_per_gene={self.sirnas_per_gene} must divide "
                              f"n_treatments={self.n_treatments}")  # fmt: skip
        if self.n_genes % self.genes_per_pathway:
            raise ConfigError(f"genes_per_pathway={self.genes_per_pathway} must divide the "
                              f"{self.n_genes} genes")  # fmt: skip
        for name in ("gene_share", "pathway_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)} must be in [0, 1]")

    @property
    def n_genes(self) -> int:
        """Target genes of the treatments (``n_treatments`` when every siRNA has its own)."""
        return self.n_treatments // self.sirnas_per_gene

    @property
    def has_relationships(self) -> bool:
        """Whether siRNAs share genes or genes share pathways (``relationships.csv``)."""
        return self.sirnas_per_gene > 1 or self.genes_per_pathway > 1

    def non_default_extras(self) -> dict[str, object]:
        """The relationship / control settings that differ from their defaults.

        ``synthetic.json`` lists only these of them, so that datasets made before they
        existed keep their bytes.
        """
        defaults = SynthConfig()
        return {
            k: getattr(self, k) for k in EXTRA_FIELDS if getattr(self, k) != getattr(defaults, k)
        }

    @property
    def n_classes(self) -> int:
        """Treatments + positive controls + the negative control (RxRx1: 1,139)."""
        return self.n_treatments + self.n_positive_controls + 1

    @property
    def wells_per_plate(self) -> int:
        """One treatment group plus every control (RxRx1: 277 + 31 = 308)."""
        return self.n_treatments // 4 + self.n_positive_controls + self.negative_controls

    def experiments(self) -> dict[str, list[str]]:
        """Experiment names per cell type, e.g. ``{"HEPG2": ["HEPG2-01", ...], ...}``."""
        out = {}
        for cell_type in CELL_TYPES:
            n = self.experiments_per_cell_type or RXRX1_EXPERIMENTS[cell_type]
            out[cell_type] = [f"{cell_type}-{i:02d}" for i in range(1, n + 1)]
        return out

    def test_experiments(self) -> set[str]:
        """The last ``round(n * test_fraction)`` experiments of each cell type (as in RxRx1)."""
        out = set()
        for names in self.experiments().values():
            n_test = round(len(names) * self.test_fraction)
            if self.test_fraction > 0 and len(names) > 1:
                n_test = min(max(n_test, 1), len(names) - 1)
            out.update(names[len(names) - n_test :])
        return out

    def replace(self, **changes: Any) -> SynthConfig:
        """A copy with ``changes``; unknown keys raise ValueError naming them."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(
                f"unknown synthetic-data setting(s) {unknown}; known: {sorted(known)}"
            )
        return dataclasses.replace(self, **changes)


EXTRA_FIELDS = ("sirnas_per_gene", "genes_per_pathway", "gene_share", "pathway_share",
                "negative_controls")  # fmt: skip

PRESETS: dict[str, SynthConfig] = {
    # The real RxRx1 dimensions: 1,139 classes, 308 of 384 wells, 512 px, 51 experiments.
    "rxrx1": SynthConfig(),
    # Small enough that the whole pipeline runs on 2 CPU cores in minutes:
    # 12 experiments x 4 plates x 21 wells x 2 sites of 6 x 64 x 64.
    "demo": SynthConfig(
        n_treatments=64,
        n_positive_controls=4,
        experiments_per_cell_type=3,
        test_fraction=0.34,
        image_size=64,
        effect_size=2.5,  # strong enough that a 300-iteration CPU model learns it (see README)
    ),
}


def preset(name: str) -> SynthConfig:
    """The named preset (``demo`` or ``rxrx1``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]
