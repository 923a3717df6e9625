"""Import timm on any torch install, including a CPU-only one.

PyPI has no CPU build of torchvision: on a CPU-only torch its C extension fails to
load, and importing torchvision (which timm does at top level) then raises
``RuntimeError: operator torchvision::nms does not exist`` from its fake-kernel
registrations. Declaring the two op schemas it registers unconditionally (nms, qnms)
lets the import finish; models, transforms and most ops work, detection ops do not
(cellblock uses none). On a CUDA install the extension loads and nothing is declared.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch

__all__ = ["import_timm"]

# Kept alive for the life of the process: dropping a Library handle unregisters its ops.
_declared: list[torch.library.Library] = []


def _declare_torchvision_ops() -> None:
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    _declared.append(lib)


def import_timm() -> ModuleType:
    """``import timm``, declaring torchvision's missing op schemas first if they are needed."""
    try:
        import torchvision
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # the failed import left a half-initialized module
        _declare_torchvision_ops()
        import torchvision  # noqa: F401
    import timm

    return timm
