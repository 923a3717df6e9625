"""Render one synthetic 6-channel site: cells, stains, then the plate's batch effects.

Each cell is an irregular ellipse with a nucleus; every stain paints its own
compartment (see ``traits.CHANNELS``)::

    w1 nucleus    filled nucleus, granular chromatin
    w2 ER         cytoplasm, brightest near the nucleus, reticulated
    w3 actin      cortex ring + stress fibres along the long axis
    w4 RNA        nucleoli spots + faint nucleus and cytoplasm
    w5 mito       punctate cytoplasm, perinuclear
    w6 Golgi/WGA  one blob beside the nucleus + the plasma membrane

The clean signal then goes through the plate's acquisition: per-channel gain,
uneven illumination, background offset and camera noise, and is quantized to uint8.
Cells are drawn on their own bounding patch only, so cost scales with cell area.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter

from cellblock.synth.design import PlateDesign
from cellblock.synth.traits import N_TRAITS

__all__ = ["RenderedSite", "render_site"]

# Peak grey level of each stain at unit intensity trait, before gain.
STAIN_LEVEL = np.array([80.0, 55.0, 50.0, 45.0, 60.0, 50.0], dtype=np.float32)


class RenderedSite(NamedTuple):
    """A rendered site and the truth behind it.

    Args:
        image: uint8 ``(6, size, size)``.
        traits: ``(N_TRAITS,)`` mean over the site's cells of each cell's log trait shift
            (phenotype + drift + the cell's own variation): what the cells really were,
            before staining, optics and noise. The oracle probe reads it.
        n_cells: Cells drawn.
    """

    image: np.ndarray
    traits: np.ndarray
    n_cells: int


def _texture(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Smooth noise with zero mean and unit std."""
    field = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma)
    return (field - field.mean()) / (field.std() + 1e-6)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def render_site(
    base: np.ndarray,
    shift: np.ndarray,
    plate: PlateDesign,
    *,
    size: int,
    cell_variation: float,
    coverage: float,
    rng: np.random.Generator,
) -> RenderedSite:
    """Render one site.

    Args:
        base: The cell type's base traits (``traits.BASE[cell_type]``).
        shift: Mean log shift of each trait at this site (phenotype + experiment drift).
        plate: The plate's design, for its batch effect parameters.
        size: Image side in pixels.
        cell_variation: Cell-to-cell std of each log trait.
        coverage: Share of the field covered by cells.
        rng: The site's own random stream.

    Returns:
        The image, and the mean log trait shift of its cells.
    """
    zoom = (size / 512.0) ** 0.6  # small fields show fewer, relatively larger cells
    signal = np.zeros((6, size, size), dtype=np.float32)
    fine = _texture(rng, size, 0.8)
    medium = _texture(rng, size, 2.0 * max(zoom, 0.5))
    puncta = _texture(rng, size, 1.0)
    mean = base * np.exp(shift)
    r_mean = mean[0] * zoom
    n_cells = max(1, int(rng.poisson(coverage * size * size / (np.pi * r_mean**2) * mean[3])))
    total = np.zeros(N_TRAITS)
    for _ in range(n_cells):
        z = shift + rng.normal(0.0, cell_variation, N_TRAITS)
        total += z
        _draw_cell(signal, base * np.exp(z), zoom, rng, _Textures(fine, medium, puncta))
    return RenderedSite(_acquire(signal, plate, rng), total / n_cells, n_cells)


class _Textures(NamedTuple):
    """A site's stain textures, each ``(size, size)``: fine (nucleus), medium
    (cytoplasm), puncta (vesicles)."""

    fine: np.ndarray
    medium: np.ndarray
    puncta: np.ndarray


def _draw_cell(
    signal: np.ndarray,
    t: np.ndarray,
    zoom: float,
    rng: np.random.Generator,
    textures: _Textures,
) -> None:
    """Add one cell, at a random place, to ``signal`` (in place).

    Args:
        signal: ``(6, size, size)`` stain intensities of the site.
        t: The cell's traits (``traits.N_TRAITS``, linear scale).
        zoom: Cell size relative to a 512 px field.
        rng: The site's random stream (the draws' order fixes the pixels).
        textures: The site's stain textures.
    """
    fine, medium, puncta = textures
    size = signal.shape[-1]
    r, elong = t[0] * zoom, max(t[1], 1.0)
    a, b = r * np.sqrt(elong), r / np.sqrt(elong)
    cy, cx = rng.uniform(0, size, 2)
    half = int(np.ceil(a * 1.25)) + 2
    y0, y1 = max(int(cy) - half, 0), min(int(cy) + half + 1, size)
    x0, x1 = max(int(cx) - half, 0), min(int(cx) + half + 1, size)
    if y1 <= y0 or x1 <= x0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    yy -= cy
    xx -= cx
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)  # along the long axis
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    phi = np.arctan2(v / b, u / a)
    wobble = (
        1.0
        + 0.09 * np.cos(2 * phi + rng.uniform(0, 6.3))
        + 0.06 * np.cos(3 * phi + rng.uniform(0, 6.3))
    )
    d = np.sqrt((u / a) ** 2 + (v / b) ** 2) / wobble  # 1 on the cell boundary
    cell = _sigmoid((1.0 - d) * r * 1.5)
    na, nb = t[2] * r * elong**0.25, t[2] * r / elong**0.25
    nu, nv = rng.normal(0.0, 0.12 * r, 2)
    dn = np.sqrt(((u - nu) / na) ** 2 + ((v - nv) / nb) ** 2)
    nucleus = _sigmoid((1.0 - dn) * na * 1.5)
    cyto = cell * (1.0 - nucleus)
    window = (slice(y0, y1), slice(x0, x1))
    f, m, p = fine[window], medium[window], puncta[window]
    perinuclear = np.clip(1.25 - d, 0.0, None)

    stripes = 0.5 + 0.5 * np.cos(v * (2.0 * np.pi / (3.0 + 2.0 * zoom)) + rng.uniform(0, 6.3))
    spots, golgi = _organelles(u, v, t, rng, nucleus=(nu, nv, na, nb))  # golgi: unmasked
    membrane = np.exp(-(((d - 0.95) / 0.12) ** 2)) * cell

    level = STAIN_LEVEL * t[4:10]
    signal[0][window] += level[0] * nucleus * np.clip(1.0 + 0.4 * t[10] * f, 0.0, None)
    signal[1][window] += level[1] * cyto * perinuclear * np.clip(1.0 + 0.6 * t[11] * m, 0.0, None)
    signal[2][window] += level[2] * (0.8 * membrane + t[12] * cyto * stripes)
    signal[3][window] += level[3] * (0.25 * cyto + 0.3 * nucleus + np.minimum(spots, 1.5) * nucleus)
    signal[4][window] += level[4] * cyto * perinuclear * np.clip(0.5 + 0.6 * t[14] * p, 0.0, None)
    signal[5][window] += level[5] * (1.2 * (golgi * cell) + 0.6 * t[16] * membrane)


def _organelles(
    u: np.ndarray,
    v: np.ndarray,
    t: np.ndarray,
    rng: np.random.Generator,
    *,
    nucleus: tuple[float, float, float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Nuclear spots and the Golgi blob of one cell (unmasked).

    Args:
        u: Coordinates along the cell's long axis (its window).
        v: Coordinates across it.
        t: The cell's traits.
        rng: The site's random stream.
        nucleus: The nucleus' centre (u, v) and half-axes (along, across).
    """
    nu, nv, na, nb = nucleus
    spots = np.zeros_like(u)
    for _ in range(int(rng.poisson(t[13]))):
        rad, ang = 0.6 * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        pu, pv = nu + rad * na * np.cos(ang), nv + rad * nb * np.sin(ang)
        s2 = 2.0 * (0.16 * (na + nb) / 2 + 0.4) ** 2
        spots += np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / s2)
    ang = rng.uniform(0, 2 * np.pi)
    gu, gv = nu + 1.05 * na * np.cos(ang), nv + 1.05 * nb * np.sin(ang)
    g2 = 2.0 * (t[15] * (na + nb) / 2 + 0.5) ** 2
    return spots, np.exp(-((u - gu) ** 2 + (v - gv) ** 2) / g2)


def _acquire(signal: np.ndarray, plate: PlateDesign, rng: np.random.Generator) -> np.ndarray:
    """Gain, uneven illumination, offset and noise of the plate's imaging; quantize."""
    size = signal.shape[-1]
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    tilt_x, tilt_y, vignette = plate.illumination
    light = 1.0 + tilt_x * ramp[None, :] + tilt_y * ramp[:, None]
    light -= abs(vignette) * (ramp[None, :] ** 2 + ramp[:, None] ** 2)
    light = np.clip(light, 0.3, None)
    gain = plate.gain.astype(np.float32)[:, None, None]
    offset = plate.offset.astype(np.float32)[:, None, None]
    image = gain * light * signal
    # Camera noise: read noise everywhere plus shot noise growing with the signal.
    sigma = plate.noise * np.sqrt(1.0 + 0.05 * image)
    image += offset + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
