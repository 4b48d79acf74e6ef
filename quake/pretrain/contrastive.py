"""Contrastive pretraining: two stations of one event are a positive pair.

Why this objective, beside masked spectrogram modelling (:mod:`quake.pretrain.objective`). What
tells an explosion from an earthquake is the source, and the source is what every station of an
event shares; path, site response and noise differ from station to station. Pulling together
the embeddings of two recordings of one event, and pushing apart those of other events in the
batch (InfoNCE, as in SimCLR and CLIP), asks the encoder for exactly what the stations agree
on. A catalog + miniSEED archive gives these pairs for free: its windows are grouped by event.

How it is done, per batch:

1. For each window a partner is drawn: another window of its event when the event has one,
   else the window itself (:class:`PartnerIndex`).
2. Each of the two views gets its own SpecAugment-style masks (one band of frequency bins and
   one run of frames, each up to ``VIEW_MASK_FRACTION`` of the axis, zeroed), so even a window
   paired with itself is not a trivial match.
3. Both views go through the encoder; the CLS token, through a projection MLP, is
   L2-normalised; ``z_a @ z_b.T / temperature`` are the logits, the partner is the target, in
   both directions (symmetric cross-entropy). Other windows of the same event in the batch are
   not negatives: their logits are removed.

The stem, CLS token, position embedding, blocks and final norm are all trained; the projection
is dropped after pretraining, as the MAE decoder is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from quake.models import HybridViT
from quake.models.encoder import freeze_head

#: The largest band of frequency bins and run of frames each view hides, as a fraction.
VIEW_MASK_FRACTION = 0.2


class PartnerIndex:
    """Draws, for each window, another window of its group (event); itself when alone."""

    def __init__(self, groups: np.ndarray):
        _, codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        self.codes = codes.astype(np.int64)
        self.order = np.argsort(self.codes, kind="stable")
        sizes = np.bincount(self.codes)
        self.start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.size = sizes
        self.position = np.empty(len(self.codes), dtype=np.int64)
        self.position[self.order] = np.arange(len(self.codes)) - self.start[self.codes[self.order]]

    def draw(self, rows: np.ndarray, generator: torch.Generator) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        code = self.codes[rows]
        size = self.size[code]
        u = torch.rand(len(rows), generator=generator, dtype=torch.float64).numpy()
        step = np.where(size > 1, 1 + np.floor(u * (size - 1)).astype(np.int64), 0)
        return self.order[self.start[code] + (self.position[rows] + step) % size]


def view_masks(
    batch: int, img_size: tuple[int, int], generator: torch.Generator | None
) -> torch.Tensor:
    """(B, 1, F, T) bool: one band of bins and one run of frames per window, to be zeroed."""
    masks = []
    for axis_len, axis in zip(img_size, (2, 3), strict=True):
        width = (torch.rand(batch, generator=generator) * VIEW_MASK_FRACTION * axis_len).long()
        start = (torch.rand(batch, generator=generator) * (axis_len - width + 1)).long()
        index = torch.arange(axis_len)
        hidden = (index >= start[:, None]) & (index < (start + width)[:, None])
        shape = [batch, 1, 1, 1]
        shape[axis] = axis_len
        masks.append(hidden.view(shape))
    return masks[0] | masks[1]


@dataclass
class ContrastiveOutput:
    loss: torch.Tensor  # scalar: symmetric InfoNCE
    logits: torch.Tensor  # (B, B) similarities / temperature, same-event negatives removed


class ContrastiveModel(nn.Module):
    """A HybridViT encoder (``self.encoder``) and the projection of the objective above.

    Args:
        encoder: the HybridViT whose stem, CLS token, position embedding, blocks and final norm
            are pretrained (its head is not used).
        temperature: of the softmax over similarities.
        projection_dim: width of the normalised embedding the loss compares.
    """

    def __init__(self, encoder: HybridViT, temperature: float = 0.1, projection_dim: int = 128):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.encoder = encoder
        freeze_head(encoder)
        self.temperature = float(temperature)
        dim = encoder.embed_dim
        self.projection = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, projection_dim)
        )

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"encoder.cls_token", "encoder.pos_embed"}

    def embed(self, spec: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        hidden = view_masks(spec.shape[0], tuple(spec.shape[2:]), generator).to(spec.device)
        cls = self.encoder.forward_features(spec.masked_fill(hidden, 0.0))[:, 0]
        return F.normalize(self.projection(cls).float(), dim=-1)

    def forward(
        self,
        spec: torch.Tensor,
        partner: torch.Tensor,
        groups: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> ContrastiveOutput:
        """``spec``, ``partner``: (B, C, H, W) spectrograms of each window and its partner;
        ``groups``: (B,) event codes of the windows."""
        z_a, z_b = self.embed(spec, generator), self.embed(partner, generator)
        logits = z_a @ z_b.T / self.temperature
        groups = groups.to(spec.device)
        same_event = groups[:, None] == groups[None, :]
        diagonal = torch.eye(len(groups), dtype=torch.bool, device=spec.device)
        logits = logits.masked_fill(same_event & ~diagonal, float("-inf"))
        target = torch.arange(len(groups), device=spec.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        return ContrastiveOutput(loss, logits)
