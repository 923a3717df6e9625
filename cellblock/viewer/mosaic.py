"""A plate as one 2-D picture: wells in plate layout, sites side by side, gaps between.

::

    gap | well A01: site 1 | site 2 | gap | well A02: site 1 | site 2 | gap ...
    gap
        | well B01 ...

``TileGrid`` is the geometry (which mosaic pixel belongs to which well and site); it
comes from the data (``DatasetInfo.plate_shape``), so 96-, 384- and 1536-well plates of
any image size and site count work alike. ``PlateMosaic`` is the mosaic of one packed
plate as a lazy ``(channel, y, x)`` array: neuroglancer's ``LocalVolume`` slices it, and
only the sites a request touches are read (a full-size RxRx1 plate is 1.2 GB of pixels,
more than a viewer should hold just to show a corner of it). ``tile_images`` lays out
in-memory images (a training batch) on the same kind of grid.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from cellblock.store.packed import PackedDataset

__all__ = ["PlateMosaic", "TileGrid", "block_mean", "default_gaps", "tile_images"]


def default_gaps(height: int, width: int) -> tuple[int, int]:
    """``(well_gap, site_gap)`` in pixels: visible at any zoom, small next to a site.

    Even, and for power-of-two image sizes powers of two, so that sites start on the
    block boundaries of 2x (any size) up to 16x (512 px sites) downsampled views
    (``PlateMosaic.downsampled``).
    """
    return max(4, height // 8), max(2, width // 32)


@dataclass(frozen=True)
class TileGrid:
    """Geometry of a grid of tiles (wells), each holding ``n_sites`` images side by side.

    Args:
        n_rows: Tile rows (plate rows).
        n_cols: Tile columns (plate columns).
        n_sites: Images per tile, placed left to right.
        height: Image height in pixels.
        width: Image width in pixels.
        gap: Pixels between tiles and around the grid.
        site_gap: Pixels between the images of one tile.
    """

    n_rows: int
    n_cols: int
    n_sites: int
    height: int
    width: int
    gap: int
    site_gap: int = 0

    @classmethod
    def for_plate(cls, plate_shape: tuple[int, ...], scale: int = 1) -> TileGrid:
        """The grid of a plate ``(rows, cols, sites, channels, height, width)``.

        Args:
            plate_shape: ``DatasetInfo.plate_shape``.
            scale: Images shrunk by this integer factor (for overviews).
        """
        rows, cols, sites, _, height, width = plate_shape
        height, width = -(-height // scale), -(-width // scale)
        gap, site_gap = default_gaps(height, width)
        return cls(rows, cols, sites, height, width, gap, site_gap)

    @property
    def tile_height(self) -> int:
        return self.height

    @property
    def tile_width(self) -> int:
        return self.n_sites * self.width + (self.n_sites - 1) * self.site_gap

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the whole mosaic."""
        return (
            self.n_rows * (self.tile_height + self.gap) + self.gap,
            self.n_cols * (self.tile_width + self.gap) + self.gap,
        )

    def tile_origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left ``(y, x)`` of tile ``(row, col)``."""
        return (
            self.gap + row * (self.tile_height + self.gap),
            self.gap + col * (self.tile_width + self.gap),
        )

    def tile_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)`` of tile ``(row, col)``, end exclusive."""
        y0, x0 = self.tile_origin(row, col)
        return y0, x0, y0 + self.tile_height, x0 + self.tile_width

    def site_origin(self, row: int, col: int, site: int) -> tuple[int, int]:
        """Top-left ``(y, x)`` of image ``site`` (1-based) of tile ``(row, col)``."""
        y0, x0 = self.tile_origin(row, col)
        return y0, x0 + (site - 1) * (self.width + self.site_gap)

    def _span(self, lo: int, hi: int, pitch: int, count: int) -> range:
        """Tile indices whose [start, start + pitch - gap) overlaps [lo, hi)."""
        first = max(0, (lo - self.gap) // pitch)
        last = min(count - 1, (hi - 1 - self.gap) // pitch)
        return range(first, last + 1)

    def sites_in(self, y0: int, y1: int, x0: int, x1: int):
        """``(row, col, site)`` of every image overlapping the box ``[y0, y1) x [x0, x1)``."""
        for row in self._span(y0, y1, self.tile_height + self.gap, self.n_rows):
            for col in self._span(x0, x1, self.tile_width + self.gap, self.n_cols):
                for site in range(1, self.n_sites + 1):
                    sy, sx = self.site_origin(row, col, site)
                    if sy < y1 and sy + self.height > y0 and sx < x1 and sx + self.width > x0:
                        yield row, col, site


def block_mean(image: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """``(C, H, W)`` -> ``(C, ceil(H/fy), ceil(W/fx))``: the mean of each block, truncated.

    Partial blocks at the edges average the pixels they have; the rounding matches
    neuroglancer's ``downsample_with_averaging``.
    """
    channels, height, width = image.shape
    ny, nx = -(-height // fy), -(-width // fx)
    pad = ((0, 0), (0, ny * fy - height), (0, nx * fx - width))
    sums = np.pad(image.astype(np.int64), pad).reshape(channels, ny, fy, nx, fx).sum((2, 4))
    counts = np.pad(np.ones((height, width), np.int64), pad[1:]).reshape(ny, fy, nx, fx)
    return (sums / counts.sum((1, 3))).astype(image.dtype)


def _paste(out: np.ndarray, image: np.ndarray, origin: tuple[int, int], box) -> None:
    """Copy the part of ``image`` (C, h, w) placed at ``origin`` that falls in ``box``.

    ``out`` is ``(C', y1 - y0, x1 - x0)`` for ``box = (channels, y0, y1, x0, x1)``.
    """
    channels, y0, y1, x0, x1 = box
    oy, ox = origin
    h, w = image.shape[-2:]
    ya, yb = max(y0, oy), min(y1, oy + h)
    xa, xb = max(x0, ox), min(x1, ox + w)
    if ya < yb and xa < xb:
        out[:, ya - y0 : yb - y0, xa - x0 : xb - x0] = image[
            channels, ya - oy : yb - oy, xa - ox : xb - ox
        ]


class PlateMosaic:
    """One packed plate as a lazy ``(channel, y, x)`` uint8 array (numpy-style slicing).

    Only sites listed in the dataset's metadata are read; unimaged wells are zeros.
    Decoded sites are kept in a bounded LRU cache shared by all channels, so the
    channel layers of a viewer (which slice the same region) read each site once.

    Args:
        packed: The dataset.
        experiment: e.g. ``"HEPG2-01"``.
        plate: 1-based plate number.
        cache_bytes: Most bytes of decoded sites to keep.
    """

    def __init__(
        self, packed: PackedDataset, experiment: str, plate: int, cache_bytes: int = 1 << 30
    ):
        packed.plate(experiment, plate)  # a missing plate: UserError listing the others
        self.packed, self.experiment, self.plate = packed, experiment, int(plate)
        self.grid = TileGrid.for_plate(packed.info.plate_shape)
        meta = packed.metadata
        sites = meta[(meta["experiment"] == experiment) & (meta["plate"] == self.plate)]
        self.sites = sites.reset_index(drop=True)
        self.imaged = {
            (int(r), int(c), int(s))
            for r, c, s in sites[["row", "col", "site"]].itertuples(index=False)
        }
        self.n_channels = len(packed.info.channels)
        self.shape = (self.n_channels, *self.grid.shape)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self._cache: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._cache_bytes, self._cached = cache_bytes, 0
        # Downsampled sites: at most 1/4 of a site each, kept for the viewer's life.
        self._small: dict[tuple[int, ...], np.ndarray] = {}
        self._lock = threading.Lock()  # neuroglancer serves chunks from a thread pool

    def site(self, row: int, col: int, site: int) -> np.ndarray:
        """``(channel, y, x)`` of one site, through the cache."""
        key = (row, col, site)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        image = self.packed.read_site(self.experiment, self.plate, row, col, site)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = image
                self._cached += image.nbytes
                while self._cached > self._cache_bytes and len(self._cache) > 1:
                    self._cached -= self._cache.popitem(last=False)[1].nbytes
        return image

    def _site_small(self, row: int, col: int, site: int, fy: int, fx: int) -> np.ndarray:
        """One site block-averaged by ``(fy, fx)``, through its own small cache."""
        key = (row, col, site, fy, fx)
        with self._lock:
            small = self._small.get(key)
        if small is None:
            small = block_mean(self.site(row, col, site), fy, fx)
            with self._lock:
                self._small[key] = small
        return small

    def downsampled(self, start, end, factor) -> np.ndarray:
        """A block of the mosaic averaged over ``factor = (fy, fx)`` pixel blocks.

        What neuroglancer's ``LocalVolume`` computes for a zoomed-out view, but from
        per-site averages: it never assembles the full-resolution region (a whole
        RxRx1 plate is 1.5 G values), and a second view of the plate reuses them.
        Where every site starts on a block boundary (``default_gaps``: 2x for any
        image size, up to 16x for 512 px sites) the result is exactly LocalVolume's;
        at coarser factors a site may sit up to one output pixel off.

        Args:
            start: ``(c, y, x)`` first index, in the downsampled grid.
            end: ``(c, y, x)`` end (exclusive), in the downsampled grid.
            factor: ``(fy, fx)``.
        """
        (c0, y0, x0), (c1, y1, x1), (fy, fx) = start, end, factor
        out = np.zeros((c1 - c0, y1 - y0, x1 - x0), self.dtype)
        for row, col, site in self.grid.sites_in(y0 * fy, y1 * fy, x0 * fx, x1 * fx):
            if (row, col, site) in self.imaged:
                oy, ox = self.grid.site_origin(row, col, site)
                small = self._site_small(row, col, site, fy, fx)
                _paste(out, small, (oy // fy, ox // fx), (slice(c0, c1), y0, y1, x0, x1))
        return out

    def __getitem__(self, item) -> np.ndarray:
        if not isinstance(item, tuple):
            item = (item,)
        item = item + (slice(None),) * (3 - len(item))
        bounds = []
        for index, size in zip(item, self.shape, strict=True):
            if not isinstance(index, slice) or index.step not in (None, 1):
                raise IndexError("PlateMosaic supports only contiguous slices")
            start, stop, _ = index.indices(size)
            bounds.append((start, max(start, stop)))
        (c0, c1), (y0, y1), (x0, x1) = bounds
        out = np.zeros((c1 - c0, y1 - y0, x1 - x0), self.dtype)
        for row, col, site in self.grid.sites_in(y0, y1, x0, x1):
            if (row, col, site) in self.imaged:
                origin = self.grid.site_origin(row, col, site)
                _paste(out, self.site(row, col, site), origin, (slice(c0, c1), y0, y1, x0, x1))
        return out


def tile_images(
    images: np.ndarray, n_cols: int | None = None, fill=0
) -> tuple[np.ndarray, TileGrid]:
    """Lay out ``(N, C, H, W)`` images on a grid, one image per tile, row-major.

    Args:
        images: The images.
        n_cols: Tiles per row (default: about square).
        fill: Value of the gaps, one per channel or one for all (normalized inputs
            are 0 at their mean: pass each channel's black level to keep gaps black).

    Returns:
        ``(mosaic (C, Y, X) of images' dtype, grid)``.
    """
    n, channels, height, width = images.shape
    n_cols = n_cols or max(1, int(np.ceil(np.sqrt(n))))
    gap, _ = default_gaps(height, width)
    grid = TileGrid(-(-n // n_cols), n_cols, 1, height, width, gap)
    out = np.empty((channels, *grid.shape), images.dtype)
    out[...] = np.broadcast_to(np.asarray(fill, images.dtype).reshape(-1, 1, 1), out.shape)
    for i in range(n):
        y, x = grid.tile_origin(*divmod(i, n_cols))
        out[:, y : y + height, x : x + width] = images[i]
    return out, grid
