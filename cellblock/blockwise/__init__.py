"""Blockwise prediction with daisy: plates x rows x columns, persistent GPU workers.

``plan`` (validate inputs, describe the run) -> ``output`` (create or resume
``PRED``) -> ``task`` (one daisy Task with done markers and a restart cap) run by
workers a ``launcher`` starts (``worker``: model loaded once, ``acquire_block``
loop) -> ``report`` (the summary). ``scan`` is the same prediction without daisy.
``geometry`` maps blocks to wells. Scripts: ``03_predict/predict_blockwise.py``,
``03_predict/predict_scan.py``; ``cli`` holds their argument parsing.
"""
