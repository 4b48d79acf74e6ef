"""Models: the HybridViT (conv stem + timm ViT blocks) and its backbones."""

from quake.models.backbones import Backbone, BackboneSpec
from quake.models.hybrid_vit import PRETRAINED_PATHS, HybridViT, pretrained_path_problem
from quake.models.pretrained import PretrainedUnavailableError
from quake.models.stem import ConvStem, stem_grid_size

__all__ = [
    "Backbone",
    "BackboneSpec",
    "ConvStem",
    "HybridViT",
    "PRETRAINED_PATHS",
    "PretrainedUnavailableError",
    "pretrained_path_problem",
    "stem_grid_size",
]
