"""fastgp's GAN trainer: ``fastgp-train`` / ``python -m fastgp.train``.

    from fastgp.train import run
    summary = run({"data": "grid", "steps": 2000})   # same option names as the CLI

Needs the ``train`` extra (numpy, tqdm, matplotlib, pillow, scikit-learn).
"""

from .checkpoint import CheckpointError
from .config import ConfigError, TrainConfig
from .trainer import NonFiniteLossError, Trainer, prepare, run

__all__ = ["run", "prepare", "Trainer", "TrainConfig", "ConfigError", "CheckpointError", "NonFiniteLossError"]
