"""The fusion head's input: the baseline's physical features, read off the spectrogram.

The random-forest baseline (:mod:`quake.models.forest`) wins on small sets with band powers,
envelope shape and the horizontal-to-vertical ratio. The fusion head hands the same kind of
evidence to the HybridViT's head, beside the CLS token, computed from the very spectrogram the
model sees (so training, classification and the ONNX export need nothing else):

- the mean spectrum of each component (over time): band powers, their ratios and the spectral
  centroid are linear or near-linear in it;
- the envelope of each component (mean over frequency per frame): peak time, rise, decay and
  coda shape;
- the horizontal-to-vertical spectral ratio, (N + E) / 2 - Z of the log spectra, per frequency.

A small MLP (LayerNorm, linear, GELU) maps them to ``FUSION_DIM`` features that join the CLS
token before the linear head.
"""

from __future__ import annotations

import torch
from torch import nn

#: Width of the fused physical-feature vector beside the CLS token.
FUSION_DIM = 64


def summary_size(in_channels: int, img_size: tuple[int, int]) -> int:
    """Length of :func:`spectrogram_summary` for an input of ``(in_channels, *img_size)``."""
    freqs, frames = img_size
    return in_channels * (freqs + frames) + (freqs if in_channels == 3 else 0)


def spectrogram_summary(x: torch.Tensor) -> torch.Tensor:
    """(B, C, F, T) log-spectrograms -> (B, :func:`summary_size`) physical features."""
    spectrum = x.mean(dim=-1)  # (B, C, F)
    envelope = x.mean(dim=-2)  # (B, C, T)
    parts = [spectrum.flatten(1), envelope.flatten(1)]
    if x.shape[1] == 3:  # Z, N, E
        parts.append(0.5 * (spectrum[:, 1] + spectrum[:, 2]) - spectrum[:, 0])
    return torch.cat(parts, dim=1)


class PhysicalFeatures(nn.Module):
    """Spectrogram -> ``FUSION_DIM`` learned combinations of its physical summaries."""

    def __init__(self, in_channels: int, img_size: tuple[int, int], dim: int = FUSION_DIM):
        super().__init__()
        size = summary_size(in_channels, img_size)
        self.norm = nn.LayerNorm(size)
        self.proj = nn.Linear(size, dim)
        self.act = nn.GELU()
        nn.init.trunc_normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.proj(self.norm(spectrogram_summary(x))))
