"""Training: config, resumable checkpoints, the loop, validation metrics, logs and plots.

``cellblock.training.loop.train(resolved_config, dataset, run_dir, iterations)`` is the
entry point; ``cellblock.training.cli`` wraps it for the setup folders' ``train.py``.
A setup's whole ``config.yaml`` (``net``, ``data``, ``train``) is
``cellblock.training.setupconfig.SetupConfig``; ``TrainConfig`` is its ``train`` section.
"""

from cellblock.training.config import TrainConfig

__all__ = ["TrainConfig"]
