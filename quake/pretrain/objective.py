"""Masked spectrogram modelling: the self-supervised objective of ``quake pretrain``.

Why this objective. A HybridViT turns a (3, F, T) log spectrogram into a grid of stem tokens,
one per 8 x 8 cell of the spectrogram (the stem's total stride). Hiding most cells and asking
the model to redraw them (MAE, He et al. 2022; Audio-MAE for spectrograms) needs no labels, no
pairs and no augmentation policy, and it trains exactly the parts a classifier reuses: the stem
(it must describe a visible cell well enough to infer its neighbours), the CLS token, the
position embedding (a hidden cell is found by its position alone) and the blocks. Seismic
spectrograms are smooth in time and frequency, so predicting a cell from its surroundings asks
for the onsets, the frequency content and the decay that also tell event types apart. The
contrastive alternative (:mod:`quake.pretrain.contrastive`, two stations of one event as the
positive pair) is measured against it in benchmarks/pretrain-payoff.md.

How it is done, per batch:

1. ``mask_ratio`` of the token cells are drawn per window (uniform, without replacement).
2. The masked cells are zeroed in the *input* spectrogram before the stem: the stem's
   receptive field (19 x 19 pixels) reaches into neighbouring cells, and without this a visible
   token would see part of what it should predict.
3. Only the visible tokens (plus CLS, each with its position embedding) go through the blocks
   (:meth:`HybridViT.forward_features` with ``keep``): with 60 % masked an epoch costs about
   half of a full forward pass.
4. A light decoder (a linear map to ``decoder_dim``, a learned mask token at every hidden
   position, its own position embedding, ``decoder_depth`` timm blocks) predicts every cell's
   pixels (3 x 8 x 8 values).
5. The target is each cell's log-spectrogram patch, normalised per patch (mean 0, std 1 over the
   pixels that lie inside the spectrogram: the last row of cells overhangs F = 33); the loss is
   the mean squared error over the masked cells only, as in MAE.

The stem's BatchNorm layers see masked inputs during pretraining; fine-tuning runs them in
training mode, so their statistics move to full inputs within its first steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from quake.models import HybridViT
from quake.models.encoder import freeze_head
from quake.models.stem import STEM_LAYERS

#: Pixels per token cell along each axis: the stem's total stride.
PATCH = math.prod(stride for _, stride, _ in STEM_LAYERS)


def visible_count(num_patches: int, mask_ratio: float) -> int:
    """Tokens left visible: at least one, and at least one masked."""
    keep = int(round(num_patches * (1.0 - mask_ratio)))
    return min(max(keep, 1), num_patches - 1)


def random_masking(
    batch: int, num_patches: int, keep: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep_index (B, keep) long, masked (B, N) bool)``: a uniform draw per window (on the
    CPU, so that a seed gives the same masks on every device)."""
    noise = torch.rand(batch, num_patches, generator=generator)
    keep_index = noise.argsort(dim=1)[:, :keep].sort(dim=1).values
    masked = torch.ones(batch, num_patches, dtype=torch.bool)
    masked.scatter_(1, keep_index, False)
    return keep_index, masked


def patchify(spec: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> ``(patches (B, N, C*P*P), inside (N, C*P*P) bool)``, one row per token
    cell in the stem's order (row-major over the grid); pixels past the spectrogram's edge are
    zeros and ``inside`` is False for them."""
    b, c, h, w = spec.shape
    gh, gw = grid
    pad = (0, gw * PATCH - w, 0, gh * PATCH - h)
    if min(pad) < 0:
        raise ValueError(f"a {h}x{w} input does not fit a {gh}x{gw} grid of {PATCH}-pixel cells")

    def cells(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, pad).reshape(x.shape[0], c, gh, PATCH, gw, PATCH)
        return x.permute(0, 2, 4, 1, 3, 5).reshape(x.shape[0], gh * gw, c * PATCH * PATCH)

    inside = cells(torch.ones(1, c, h, w, device=spec.device))[0] > 0
    return cells(spec), inside


def normalise_patches(patches: torch.Tensor, inside: torch.Tensor, eps: float = 1e-6):
    """Per patch: mean 0 and std 1 over the pixels ``inside`` (outside ones become 0)."""
    weight = inside.to(patches.dtype)
    count = weight.sum(dim=-1)
    mean = (patches * weight).sum(dim=-1) / count
    var = (((patches - mean[..., None]) * weight) ** 2).sum(dim=-1) / count
    return (patches - mean[..., None]) / (var[..., None] + eps).sqrt() * weight


@dataclass
class MaskedOutput:
    loss: torch.Tensor  # scalar: mean squared error over the masked cells
    prediction: torch.Tensor  # (B, N, C*P*P) in normalised-patch units
    target: torch.Tensor  # (B, N, C*P*P) normalised patches
    masked: torch.Tensor  # (B, N) bool


class MaskedSpectrogramModel(nn.Module):
    """A HybridViT encoder (``self.encoder``) and the light decoder of the objective above.

    Args:
        encoder: the HybridViT whose stem, CLS token, position embedding, blocks and final norm
            are pretrained (its head is not used).
        mask_ratio: fraction of the token cells hidden from the encoder.
        decoder_dim, decoder_depth, decoder_heads: the decoder's width, blocks and heads.
    """

    def __init__(
        self,
        encoder: HybridViT,
        mask_ratio: float = 0.6,
        decoder_dim: int = 128,
        decoder_depth: int = 1,
        decoder_heads: int = 4,
    ):
        super().__init__()
        from timm.models.vision_transformer import Block

        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio!r}")
        self.encoder = encoder
        freeze_head(encoder)
        self.mask_ratio = float(mask_ratio)
        self.grid = tuple(encoder.grid_size)
        self.num_patches = encoder.num_patches
        if self.num_patches < 2:
            raise ValueError(
                f"an input of {encoder.img_size} gives {self.num_patches} token; masking needs "
                "at least 2 (a longer window or a shorter STFT hop)"
            )
        self.keep = visible_count(self.num_patches, self.mask_ratio)
        self.patch_dim = encoder.in_channels * PATCH * PATCH
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, decoder_dim))
        self.decoder_blocks = nn.Sequential(
            *[Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True)
              for _ in range(decoder_depth)]
        )  # fmt: skip
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_dim)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"encoder.cls_token", "encoder.pos_embed", "mask_token", "decoder_pos_embed"}

    def forward(
        self,
        spec: torch.Tensor,
        generator: torch.Generator | None = None,
        masking: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> MaskedOutput:
        """``spec``: (B, C, H, W) spectrograms. ``masking``: a ``random_masking`` result to use
        (else one is drawn from ``generator``)."""
        b = spec.shape[0]
        keep_index, masked = masking or random_masking(b, self.num_patches, self.keep, generator)
        keep_index, masked = keep_index.to(spec.device), masked.to(spec.device)

        # hide the masked cells from the stem: zero their pixels in the input
        gh, gw = self.grid
        hidden = masked.view(b, 1, gh, gw).repeat_interleave(PATCH, 2).repeat_interleave(PATCH, 3)
        hidden = hidden[:, :, : spec.shape[2], : spec.shape[3]]
        tokens = self.encoder.forward_features(spec.masked_fill(hidden, 0.0), keep=keep_index)

        x = self.decoder_embed(tokens)
        full = self.mask_token.to(x.dtype).expand(b, self.num_patches, -1).clone()
        full.scatter_(1, keep_index[..., None].expand(-1, -1, x.shape[-1]), x[:, 1:])
        x = torch.cat([x[:, :1], full], dim=1) + self.decoder_pos_embed
        x = self.decoder_norm(self.decoder_blocks(x))
        prediction = self.decoder_pred(x[:, 1:]).float()

        patches, inside = patchify(spec.float(), self.grid)
        target = normalise_patches(patches, inside)
        weight = inside.to(prediction.dtype)
        per_cell = ((prediction - target) ** 2 * weight).sum(-1) / weight.sum(-1)
        loss = (per_cell * masked).sum() / masked.sum()
        return MaskedOutput(loss, prediction, target, masked)
