"""Looking at the data: plates, predictions and training batches in neuroglancer.

* ``mosaic``     a plate as one 2-D picture (wells in plate layout, sites side by side)
* ``display``    channel colours and ranges (from the OME metadata), RxRx1's composite
* ``layers``     neuroglancer image / annotation layers over a mosaic
* ``volume``     the mosaic as a neuroglancer volume that zooms out from per-site averages
* ``overlay``    per-well predictions (store or ensemble submission) vs truth
* ``plate``      a whole plate in a viewer; ``batch``: a training batch snapshot
* ``server``     the web server: loopback by default, clear errors
* ``dataserver`` the dataset folder over HTTP (CORS, Range) for browser-side readers
* ``fields``     a plate's OME-Zarr fields through neuroglancer's own ``zarr3://`` source
* ``screenshot`` headless chromium screenshots; ``montage``: a static overview PNG
* ``cli``        ``01_data/view_data.py`` and ``02_train/*/*/view_batch.py``
"""
