"""Models: the HybridViT (conv stem + timm ViT blocks) and its backbones."""

from quake.models.backbones import Backbone, BackboneSpec
from quake.models.hybrid_vit import HybridViT
from quake.models.pretrained import PretrainedUnavailableError
from quake.models.stem import ConvStem, stem_grid_size

__all__ = [
    "Backbone",
    "BackboneSpec",
    "ConvStem",
    "HybridViT",
    "PretrainedUnavailableError",
    "stem_grid_size",
]
