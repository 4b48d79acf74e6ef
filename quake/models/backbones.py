"""The pretrained ViT backbones a HybridViT can borrow its transformer blocks from.

Each :class:`Backbone` names one timm architecture; its embedding width and head count are
read from this table, so no other module repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class BackboneSpec:
    """The timm model a backbone comes from and the shape of its tokens."""

    timm_name: str
    embed_dim: int
    num_heads: int
    depth: int = 12
    patch_size: int = 16
    pretrain_img_size: int = 224

    @property
    def pretrain_grid_size(self) -> tuple[int, int]:
        """Grid of the pretrained position embedding (14x14 for 224 px and 16 px patches)."""
        side = self.pretrain_img_size // self.patch_size
        return side, side


_SPECS: dict[str, BackboneSpec] = {
    "tiny": BackboneSpec("vit_tiny_patch16_224", embed_dim=192, num_heads=3),
    "small": BackboneSpec("vit_small_patch16_224", embed_dim=384, num_heads=6),
    "base": BackboneSpec("vit_base_patch16_224", embed_dim=768, num_heads=12),
    "deit_tiny": BackboneSpec("deit_tiny_patch16_224", embed_dim=192, num_heads=3),
    "deit_small": BackboneSpec("deit_small_patch16_224", embed_dim=384, num_heads=6),
}


class Backbone(str, Enum):
    """A ViT backbone: ``Backbone.TINY``, ``Backbone("tiny")`` or ``Backbone.from_name("TINY")``."""

    TINY = "tiny"
    SMALL = "small"
    BASE = "base"
    DEIT_TINY = "deit_tiny"
    DEIT_SMALL = "deit_small"

    @classmethod
    def _missing_(cls, value: object) -> Backbone | None:
        # Enum calls this when ``Backbone(value)`` matches no value exactly: accept any spelling
        # from_name accepts, so a user-typed "TINY" or "deit-small" works everywhere.
        if isinstance(value, str):
            return cls._lookup(value)
        return None

    @classmethod
    def _lookup(cls, name: str) -> Backbone | None:
        key = name.strip().lower().replace("-", "_")
        for member in cls:
            if key in (member.value, member.spec.timm_name):
                return member
        return None

    @classmethod
    def from_name(cls, name: str | Backbone) -> Backbone:
        """Parse a user-typed name (case-insensitive; member name, value or timm model name)."""
        if isinstance(name, Backbone):
            return name
        member = cls._lookup(name) if isinstance(name, str) else None
        if member is None:
            raise ValueError(
                f"unknown backbone {name!r}; expected one of "
                f"{[m.value for m in cls]} (or their timm names {[m.timm_name for m in cls]})"
            )
        return member

    @property
    def spec(self) -> BackboneSpec:
        return _SPECS[self.value]

    @property
    def timm_name(self) -> str:
        return self.spec.timm_name

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    @property
    def num_heads(self) -> int:
        return self.spec.num_heads

    @property
    def max_depth(self) -> int:
        return self.spec.depth

    def __str__(self) -> str:
        return self.value
