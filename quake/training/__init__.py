"""Cross-validated training of the HybridViT, the spectral baseline, metrics and reports.

``load_config`` builds a validated :class:`TrainConfig` (defaults < YAML file < overrides);
``train`` runs it end to end in a resumable run folder. ``scripts/train.py`` is the command line.
"""

from quake.training.config import TrainConfig, load_config
from quake.training.run import RunResult, train

__all__ = ["RunResult", "TrainConfig", "load_config", "train"]
