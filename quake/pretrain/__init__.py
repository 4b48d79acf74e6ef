"""Self-supervised pretraining of the HybridViT on unlabelled recordings (``quake pretrain``).

- :mod:`quake.pretrain.config`: the configuration (defaults, YAML, overrides, validation);
- :mod:`quake.pretrain.data`: unlabelled windows from SeisBench sets, catalogs with or without
  event types and plain miniSEED trees, cut as training cuts them;
- :mod:`quake.pretrain.objective`: masked spectrogram modelling (why and how: its docstring);
- :mod:`quake.pretrain.contrastive`: the contrastive alternative, two stations of one event as
  the positive pair (``objective.name: contrastive``);
- :mod:`quake.pretrain.run`: the run folder (encoder weights, pretrain.json, loss curve),
  resumable and written atomically.

``quake train --pretrained DIR`` starts every fold from the encoder (:mod:`quake.models.encoder`).
"""

from quake.pretrain.config import PretrainConfig, load_pretrain_config
from quake.pretrain.contrastive import ContrastiveModel
from quake.pretrain.objective import MaskedSpectrogramModel
from quake.pretrain.run import PretrainResult, pretrain

__all__ = [
    "ContrastiveModel",
    "MaskedSpectrogramModel",
    "PretrainConfig",
    "PretrainResult",
    "load_pretrain_config",
    "pretrain",
]
