"""cellblock: classify cellular microscopy plates (RxRx1-style) at HPC scale.

Modules, one concept each: ``plates`` (geometry, naming), ``metadata`` (tables),
``synth`` (synthetic screens), ``pack`` (PNG tree -> zarr), ``dataset`` (reading
packed plates), ``atomic`` (crash-safe writes), ``cli`` (shared script plumbing).
"""

__version__ = "0.1.0"
