"""HybridViT: a convolutional stem feeding (pretrained) timm ViT blocks.

A (B, C, F, T) spectrogram goes through the conv stem to a (B, D, F/8, T/8) map, which is
flattened into tokens; a CLS token is prepended, position embeddings added, and the first
``depth`` blocks of a timm ViT (timm's own ``Block`` modules, fused attention included) run
over them. The CLS token, after the final LayerNorm and dropout, feeds a linear head; with
``fusion`` the head also sees the spectrogram's physical features (:mod:`quake.models.fusion`).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quake.classes import ClassNames
from quake.data.config import DEFAULT_SPECTROGRAM_SIZE
from quake.models.backbones import Backbone
from quake.models.encoder import (
    ENCODER_FILE,
    find_encoder,
    load_encoder,
    read_encoder,
    run_summary,
    what_folder_is,
)
from quake.models.fusion import FUSION_DIM, PhysicalFeatures
from quake.models.pretrained import (
    CHECKPOINT_SUFFIXES,
    copy_backbone_weights,
    fetch_hub_state_dict,
    read_checkpoint,
    summarise_keys,
)
from quake.models.stem import ConvStem, stem_grid_size
from quake.runtime import read_json, write_atomic, write_text_atomic
from quake.version import __version__

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
_FORMAT = "quake.HybridViT"


def _positive_int(name: str, value: object, upper: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if upper is not None and value > upper:
        raise ValueError(f"{name} must be between 1 and {upper}, got {value!r}")
    return value


def _rate(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _img_size(value: object) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(
            f"img_size must be (height, width) in positive integers, got {value!r}; "
            "e.g. (33, 64) for 33 frequency bins x 64 time frames"
        )
    return int(value[0]), int(value[1])


def _pretrained_arg(value: object) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, os.PathLike)) and str(value):
        return os.fspath(value)
    raise ValueError(
        f"pretrained must be True (timm's ImageNet weights), False (random init) or a path to a "
        f"timm checkpoint file or a pretraining folder (quake pretrain), got {value!r}"
    )


#: What a path given as ``pretrained`` may name.
PRETRAINED_PATHS = (
    f"a folder written by quake pretrain (with {ENCODER_FILE}) or a timm checkpoint file "
    f"({', '.join(CHECKPOINT_SUFFIXES)})"
)


def pretrained_path_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be pretrained weights ("is a quake training run folder ...", "does
    not exist"), or None when it can. Decided from the path's name and layout alone, so that a
    wrong path stops a training run before any data is read or any folder is made."""
    path = Path(path).expanduser()
    if path.is_dir():
        return None if (path / ENCODER_FILE).is_file() else f"is {what_folder_is(path)}"
    if not path.exists():
        return "does not exist"
    if not path.is_file():
        return "is neither a file nor a folder"
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        return f"is a {path.suffix} file" if path.suffix else "is a file without a suffix"
    return None


class HybridViT(nn.Module):
    """Conv stem + CLS token + position embedding + the first ``depth`` timm ViT blocks.

    Args:
        backbone: which timm ViT the blocks come from (a :class:`Backbone` or its name).
        depth: number of transformer blocks (1..12); ``None`` takes all 12.
        in_channels: input channels (3 for Z, N, E spectrograms).
        num_classes: output logits.
        img_size: (height, width) of the input; the token grid is computed from it.
        dropout: dropout on the CLS feature before the head.
        freeze_backbone: start with blocks, CLS token and pos-embed frozen.
        pretrained: True for timm's ImageNet weights (cache or hub), a path for a local timm
            checkpoint (.pth/.bin/.safetensors/.npz) or for a pretraining folder written by
            ``quake pretrain`` (or its ``encoder.safetensors``: stem, CLS token, position
            embedding, blocks and norm all come from it; :mod:`quake.models.encoder`), False
            for random init.
        drop_path_rate: stochastic depth, rising linearly to this rate over the ``depth`` blocks.
        class_names: names of the outputs, saved with the model; must have ``num_classes`` names.
        fusion: the head also sees the spectrogram's band powers, envelopes and H/V ratio
            (:mod:`quake.models.fusion`) beside the CLS token.
    """

    def __init__(
        self,
        backbone: Backbone | str = Backbone.TINY,
        depth: int | None = 4,
        in_channels: int = 3,
        num_classes: int = 2,
        img_size: int | Sequence[int] = DEFAULT_SPECTROGRAM_SIZE,
        dropout: float = 0.2,
        freeze_backbone: bool = False,
        pretrained: bool | str | os.PathLike[str] = False,
        drop_path_rate: float = 0.0,
        class_names: ClassNames | Sequence[str] | None = None,
        fusion: bool = False,
    ):
        super().__init__()
        import timm

        self.backbone = Backbone.from_name(backbone)
        spec = self.backbone.spec
        self.depth = spec.depth if depth is None else _positive_int("depth", depth, spec.depth)
        self.in_channels = _positive_int("in_channels", in_channels)
        self.num_classes = _positive_int("num_classes", num_classes)
        self.img_size = _img_size(img_size)
        self.dropout = _rate("dropout", dropout)
        self.drop_path_rate = _rate("drop_path_rate", drop_path_rate)
        pretrained = _pretrained_arg(pretrained)
        for name, flag in (("freeze_backbone", freeze_backbone), ("fusion", fusion)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        self.class_names = None if class_names is None else ClassNames(class_names)
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names {self.class_names.to_list()}; "
                f"expected num_classes={self.num_classes}"
            )

        self.embed_dim = spec.embed_dim
        self.grid_size = stem_grid_size(self.img_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.channels_last = True

        # timm builds the transformer: its Block modules, init and stochastic-depth schedule.
        # Asking for `depth` blocks gives the same blocks as slicing a 12-block model, without
        # allocating the unused ones, and spreads drop_path_rate over the blocks actually used.
        vit = timm.create_model(
            self.backbone.timm_name,
            pretrained=False,
            num_classes=0,
            depth=self.depth,
            drop_path_rate=self.drop_path_rate,
        )
        self.stem = ConvStem(self.in_channels, self.embed_dim)
        self.cls_token = vit.cls_token
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, self.embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = vit.blocks
        self.norm = vit.norm
        self.head_drop = nn.Dropout(self.dropout)
        self.fusion = PhysicalFeatures(self.in_channels, self.img_size) if fusion else None
        self.head = nn.Linear(self.embed_dim + (FUSION_DIM if fusion else 0), self.num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

        self._pretrained_arg = pretrained
        self.pretrained_info: dict[str, Any] = self._load_pretrained(pretrained)
        self._backbone_frozen = False
        if freeze_backbone:
            self.freeze_backbone()

    # ------------------------------------------------------------------ pretrained weights
    def _pretrained_keys(self) -> list[str]:
        """State-dict keys a timm ViT checkpoint fills: CLS, pos-embed, blocks, final norm."""
        return [
            key
            for key in self.state_dict()
            if key in ("cls_token", "pos_embed") or key.startswith(("blocks.", "norm."))
        ]

    def _load_pretrained(self, pretrained: bool | str) -> dict[str, Any]:
        if pretrained is False:
            return {
                "source": "none",
                "loaded": [],
                "resampled": [],
                "missing": [],
                "unexpected": [],
            }
        if pretrained is True:
            state_dict, location = fetch_hub_state_dict(self.backbone)
            source = "timm-hub"
        elif (encoder_file := find_encoder(pretrained)) is not None:
            checkpoint = read_encoder(encoder_file)
            info = load_encoder(self, checkpoint)
            return {
                "source": f"pretrain-run:{checkpoint.folder}",
                "checkpoint": str(encoder_file),
                "pretrain_run": run_summary(checkpoint),
                **info,
            }
        else:
            state_dict, location = read_checkpoint(pretrained, self.backbone), pretrained
            source = f"file:{pretrained}"
        info = copy_backbone_weights(
            self, state_dict, self.backbone, self.grid_size, self._pretrained_keys()
        )
        return {"source": source, "checkpoint": location, **info}

    # ------------------------------------------------------------------ freezing
    def _backbone_parameters(self) -> Iterator[nn.Parameter]:
        yield self.cls_token
        yield self.pos_embed
        yield from self.blocks.parameters()

    @property
    def backbone_frozen(self) -> bool:
        return self._backbone_frozen

    def freeze_backbone(self) -> None:
        """Freeze blocks, CLS token and pos-embed; stem, final norm and head keep training."""
        for p in self._backbone_parameters():
            p.requires_grad_(False)
        self._backbone_frozen = True
        logger.info(
            "Froze %s backbone: %d parameters; %d stay trainable (stem, norm, head)",
            self.backbone.value,
            sum(p.numel() for p in self._backbone_parameters()),
            sum(p.numel() for p in self.parameters() if p.requires_grad),
        )

    def unfreeze_backbone(self) -> None:
        """Make every parameter trainable again (second fine-tuning stage)."""
        for p in self.parameters():
            p.requires_grad_(True)
        self._backbone_frozen = False
        logger.info("Unfroze %s backbone: all parameters trainable", self.backbone.value)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters timm keeps out of weight decay."""
        return {"cls_token", "pos_embed"}

    # ------------------------------------------------------------------ forward
    def forward_features(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, 1 + H'W', D) normalised tokens, CLS first.

        ``keep``: (B, K) indices of the patch tokens to keep (masked pretraining,
        :mod:`quake.pretrain.objective`): only those K, with their position embeddings, go
        through the blocks, giving (B, 1 + K, D).
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.img_size:
            raise ValueError(
                f"input has shape {tuple(x.shape)}; expected (batch, {self.in_channels}, "
                f"{self.img_size[0]}, {self.img_size[1]})"
            )
        if self.channels_last:
            # oneDNN/cuDNN convolutions are faster in NHWC, and an NHWC stem output turns
            # into (B, tokens, D) without a copy.
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        x = x.flatten(2).transpose(1, 2)
        if keep is None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        else:
            x = x + self.pos_embed[:, 1:]
            x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
            cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
            x = torch.cat([cls, x], dim=1)
        x = self.blocks(x)
        return self.norm(x)

    def forward_head(
        self, x: torch.Tensor, pre_logits: bool = False, spectrogram: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, 1 + H'W', D) tokens -> (B, num_classes) logits from the CLS token (with
        ``fusion``, and the physical features of the input ``spectrogram`` beside it)."""
        x = x[:, 0]
        if self.fusion is not None:
            if spectrogram is None:
                raise ValueError("a HybridViT with fusion needs the input spectrogram in its head")
            x = torch.cat([x, self.fusion(spectrogram).to(x.dtype)], dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x), spectrogram=x)

    # ------------------------------------------------------------------ save / load
    @property
    def init_kwargs(self) -> dict[str, Any]:
        """JSON-safe constructor arguments (freeze state as it is now)."""
        return {
            "backbone": self.backbone.value,
            "depth": self.depth,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "img_size": list(self.img_size),
            "dropout": self.dropout,
            "freeze_backbone": self._backbone_frozen,
            "pretrained": self._pretrained_arg,
            "drop_path_rate": self.drop_path_rate,
            "class_names": None if self.class_names is None else self.class_names.to_list(),
            "fusion": self.fusion is not None,
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors`` and ``model.json`` (arguments, class names) to ``directory``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "format": _FORMAT,
            "quake_version": __version__,
            "init_kwargs": {**self.init_kwargs, "pretrained": False},
            "class_names": None if self.class_names is None else self.class_names.to_list(),
            "pretrained_source": self.pretrained_info.get("source", "none"),
        }
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        write_atomic(
            directory / WEIGHTS_FILE,
            lambda tmp: save_file(tensors, str(tmp), metadata={"format": _FORMAT}),
        )
        write_text_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        logger.info(
            "Saved HybridViT (%s, depth %d) to %s", self.backbone.value, self.depth, directory
        )
        return directory

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
    ) -> HybridViT:
        """Rebuild a model written by :meth:`save` (safetensors + JSON, no pickle)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{str(path)!r} not found; expected a directory written by HybridViT.save "
                    f"({CONFIG_FILE} + {WEIGHTS_FILE})"
                )
        config = read_json(config_path, "the model.json HybridViT.save writes")
        if config.get("format") != _FORMAT:
            raise ValueError(
                f"{str(config_path)!r} has format {config.get('format')!r}; expected {_FORMAT!r}"
            )
        kwargs = {**config.get("init_kwargs", {}), "pretrained": False}
        unknown = sorted(set(kwargs) - set(inspect.signature(cls).parameters))
        if unknown:
            raise ValueError(
                f"{str(config_path)!r} has unknown init_kwargs {unknown}; expected only "
                f"HybridViT arguments ({', '.join(inspect.signature(cls).parameters)})"
            )
        if config.get("class_names") is not None:
            kwargs["class_names"] = config["class_names"]
        model = cls(**kwargs)
        try:
            state_dict = load_file(str(weights_path), device="cpu")
        except Exception as err:  # safetensors raises its own error types for a damaged file
            raise ValueError(
                f"{str(weights_path)!r} is not a readable safetensors file ({err}); expected the "
                "weights HybridViT.save writes (not a truncated copy or a renamed pickle)"
            ) from None
        _check_weights_fit(model, state_dict, weights_path, config_path)
        model.load_state_dict(state_dict, strict=True)
        model.pretrained_info = {
            "source": f"file:{weights_path}",
            "checkpoint": str(weights_path),
            "loaded": sorted(state_dict),
            "resampled": [],
            "missing": [],
            "unexpected": [],
        }
        return model.to(map_location)

    def extra_repr(self) -> str:
        return (
            f"backbone={self.backbone.value}, depth={self.depth}, img_size={self.img_size}, "
            f"grid_size={self.grid_size}, num_classes={self.num_classes}, "
            f"fusion={self.fusion is not None}"
        )


def _check_weights_fit(
    model: nn.Module, state_dict: dict[str, torch.Tensor], weights_path: Path, config_path: Path
) -> None:
    """A ValueError naming both files when the weights are not those of the model the config
    describes (a depth or backbone edited in model.json, weights of another model)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    reshaped = sorted(
        k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape
    )
    if missing or unexpected or reshaped:
        problems = [
            f"{label} {summarise_keys(keys)}"
            for label, keys in (("missing", missing), ("unexpected", unexpected),
                                ("of another shape", reshaped))
            if keys
        ]  # fmt: skip
        raise ValueError(
            f"{str(weights_path)!r} does not fit the model {str(config_path)!r} describes "
            f"({'; '.join(problems)}); expected the init_kwargs (depth, backbone, img_size) the "
            "weights were saved with"
        )
