"""A synthetic RxRx1-style screen: cells in 6 stains, siRNA phenotypes, batch effects.

``config`` holds the knobs and presets, ``design`` decides what goes in which well,
``traits`` describes cell morphology, ``render`` draws one site, ``write`` writes
the PNG tree and tables.
"""

from cellblock.synth.config import PRESETS, SynthConfig, preset
from cellblock.synth.design import Design
from cellblock.synth.write import write_dataset

__all__ = ["PRESETS", "Design", "SynthConfig", "preset", "write_dataset"]
