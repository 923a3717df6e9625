"""Importing what a light caller needs costs no torch (nor submitit, daisy, neuroglancer).

A login node submitting jobs reads configs and grids; the daisy driver plans blocks;
``--help`` answers at once; the ensemble and the profiles read stores. Each module below
is imported alone in a fresh interpreter, and the heavy packages it must not load are
looked for in ``sys.modules``. A module-level import that drags torch in fails here.
"""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "submitit", "daisy", "neuroglancer")

LIGHT = {
    "cellblock.cli": HEAVY,
    "cellblock.paths": HEAVY,
    "cellblock.parallel": HEAVY,  # every pool worker imports it first
    "cellblock.finished": HEAVY,  # evaluate.py and the viewer check a folder with it
    "cellblock.devices": HEAVY,  # GPU masks and the precision rule, asked before torch
    "cellblock.container": HEAVY,
    "cellblock.tta": HEAVY,
    "cellblock.screen.sites": HEAVY,
    "cellblock.store.packed": HEAVY,
    "cellblock.store.predictions": HEAVY,
    "cellblock.remote.storage": HEAVY,
    "cellblock.data.config": HEAVY,
    "cellblock.nets.netconfig": HEAVY,
    "cellblock.training.setupconfig": HEAVY,  # a setup's config.yaml, read anywhere
    "cellblock.training.cli": HEAVY,  # mknet.py / train.py --help
    "cellblock.blockwise.plan": HEAVY,  # a worker reads its plan before torch
    "cellblock.blockwise.cli": HEAVY,  # predict_blockwise.py --help
    "cellblock.ensemble": HEAVY,
    "cellblock.profiling.table": HEAVY,
    "cellblock.progress": HEAVY,  # every long stage imports it
    "cellblock.profiling.mapscore": HEAVY,
    "cellblock.cluster": ("torch", "timm", "daisy", "neuroglancer"),  # submitit is its job
}


def _loaded(module: str) -> list[str]:
    code = (f"import sys, json, {module}; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", sorted(LIGHT))
def test_light_module_loads_nothing_heavy(module):
    heavy = sorted(set(_loaded(module)) & set(LIGHT[module]))
    assert not heavy, f"importing {module} loads {heavy}"


def test_the_check_sees_a_heavy_import():
    assert "torch" in _loaded("cellblock.nets.models")
