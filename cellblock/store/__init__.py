"""What cellblock keeps on disk and how it is read and written: plate geometry and RxRx1
naming (``plates``), the site tables (``metadata``), the raw PNG tree (``rawtree``), the
packed dataset of OME-Zarr plates (``packed``: ``PackedDataset``; ``omezarr``,
``platestore``, ``datasetinfo``), packing and checking it (``pack``, ``packplates``,
``rowencode``, ``verify``, ``upgrade`` from the previous layout), the fast chunk readers
and writer (``fieldread``, ``shardread``, ``chunkcodec``, ``chunkwrite``) and the
predictions store (``predictions``, ``predinfo``). Nothing is imported here: import the
submodules.
"""
