"""Test-time augmentation modes: which dihedral views of a site prediction averages.

Free of torch, so a command line can list the modes without importing the network.
"""

from __future__ import annotations

from cellblock.errors import UserError

__all__ = ["TTA", "tta_transforms"]

# Elements of the dihedral group (cellblock.data.augment.d4: k % 4 quarter turns, then a flip if
# k >= 4). "flips" = identity, both flips and their product (a half turn): valid on
# non-square images too. Microscopy has no canonical orientation, so all are free views.
TTA: dict[str, tuple[int, ...]] = {"none": (0,), "flips": (0, 2, 4, 6), "d4": tuple(range(8))}


def tta_transforms(name: str, image_size: tuple[int, int]) -> tuple[int, ...]:
    """The dihedral elements of a TTA mode.

    Args:
        name: ``"none"``, ``"flips"`` or ``"d4"``.
        image_size: ``(height, width)`` of the sites; quarter turns need square ones.

    Raises:
        UserError: An unknown mode, or ``"d4"`` on non-square images.
    """
    if name not in TTA:
        raise UserError(f"--tta {name!r}: expected one of {', '.join(TTA)}")
    if name == "d4" and image_size[0] != image_size[1]:
        raise UserError(
            f"--tta d4 rotates by 90 degrees, which needs square sites; these are "
            f"{image_size[0]}x{image_size[1]} (use --tta flips)"
        )
    return TTA[name]
