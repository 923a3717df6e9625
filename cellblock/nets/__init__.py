"""The networks: a timm backbone with an n-channel stem, pooling, an embedding and a head
(``models``: ``NetConfig``, ``build_net``), the classification heads (``heads``: softmax,
CosFace, ArcFace), pretrained backbone weights from a file or ``s3://`` (``pretrained``),
per-plate BatchNorm statistics (``bnstats``, AdaBN) and importing timm on any torch
install (``torchcompat``). Nothing is imported here, so ``import cellblock.nets`` costs
no torch: import the submodules.
"""
