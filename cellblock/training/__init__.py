"""Training: config, resumable checkpoints, the loop, validation metrics, logs and plots.

``cellblock.training.loop.train(resolved_config, dataset, run_dir, iterations)`` is the
entry point; ``cellblock.setup_cli`` wraps it for the setup folders' ``train.py``.
Submodules are imported where used (``cellblock.config`` imports ``TrainConfig`` from
here, and the loop imports ``cellblock.config``).
"""

from cellblock.training.config import TrainConfig

__all__ = ["TrainConfig"]
