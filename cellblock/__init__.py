"""cellblock: classify cellular microscopy plates (RxRx1-style) at HPC scale.

Subpackages follow the stages and the data: ``remote`` (object storage, HTTPS, the
catalog), ``store`` (on-disk formats: plates, tables, packed OME-Zarr datasets, the
predictions store), ``synth`` (synthetic screens), ``data`` (training datasets), ``nets``
(networks), ``training``, ``blockwise`` (prediction), ``ensemble``, ``profiling``; beside
them ``atomic`` (crash-safe writes), ``cli`` (shared script plumbing) and ``devservices``
(the local S3 store and SLURM cluster of the tests and the demo).
"""

__version__ = "0.1.0"
