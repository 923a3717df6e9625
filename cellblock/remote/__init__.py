"""Getting data from where it is published: object storage (S3 addresses and client in
``s3``, fetch and publish in ``storage``), plain HTTP(S) (``httpclient``: resumable
downloads and a ranged file-like reader; ``httpfetch``: whole or partial dataset fetches),
safe resumable zip extraction (``unzip``), the dataset catalog (``catalog``), a verified
local cache of single objects (``cache``) and file integrity (``checksums``: ETags,
manifests, ``.sha256`` sidecars). Nothing is imported here: import the submodules.
"""
