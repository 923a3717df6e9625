"""``python -m cellblock.cluster.smoke``: is this environment (venv or cell.sif) usable?

The container's ``%test`` runs it after a build, and the install test runs it in a fresh
venv: the pinned stack imports, torch sees CUDA when there is a GPU, and a small
6-channel network runs forward and backward on the best device. Exit status 0 if so.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "smoke_test"]

MODULES = ("numpy", "zarr", "torch", "timm", "daisy", "submitit", "neuroglancer", "cellblock")


def smoke_test(require_cuda: bool = False) -> list[str]:
    """Run the checks; return a report line per check.

    Args:
        require_cuda: Fail when torch sees no CUDA device (use on a GPU node).

    Raises:
        RuntimeError: A check failed (the message says which).
    """
    from cellblock.nets.torchcompat import import_timm

    import_timm()  # timm through the project's CPU-torch shim, as training imports it
    report = []
    for name in MODULES:
        module = importlib.import_module(name)
        report.append(f"{name} {getattr(module, '__version__', '?')}")
    import torch

    from cellblock.nets.models import build_net
    from cellblock.nets.netconfig import NetConfig

    cuda = torch.cuda.is_available()
    if require_cuda and not cuda:
        raise RuntimeError(f"torch {torch.__version__} sees no CUDA device (--nv missing?)")
    device = torch.device("cuda" if cuda else "cpu")
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    report.append(f"device {device}" + (f" ({', '.join(gpus)})" if gpus else ""))
    cfg = NetConfig(backbone="test_resnet", in_channels=6, num_classes=5, embedding_dim=16,
                    input_size=32)  # fmt: skip
    net = build_net(cfg).to(device)
    images = torch.rand(2, 6, 32, 32, device=device)
    out = net(images)
    if tuple(out.logits.shape) != (2, 5):
        raise RuntimeError(f"logits of shape {tuple(out.logits.shape)}, expected (2, 5)")
    net.loss(out, torch.tensor([0, 1], device=device)).backward()
    report.append(f"forward/backward ok on {device}")
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: print the report; exit 1 with the failure otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require-cuda", action="store_true", help="fail without a GPU")
    args = parser.parse_args(argv)
    try:
        for line in smoke_test(args.require_cuda):
            print(line)
    except Exception as e:  # any failure is the answer: report it in one line
        print(f"smoke test failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
