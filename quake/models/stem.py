"""Convolutional stem that replaces ViT's 16x16 patchify.

A spectrogram of a few seconds is small (e.g. 33 x 64); cutting it into 16x16 patches would
leave a handful of tokens, each a blunt linear projection. Three strided convolutions (total
stride 8) give a finer grid and local features the transformer can attend over.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# (kernel, stride, padding) of the three convolutions, in order.
STEM_LAYERS: tuple[tuple[int, int, int], ...] = ((7, 2, 3), (3, 2, 1), (3, 2, 1))
STEM_WIDTHS: tuple[int, int] = (64, 128)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def stem_grid_size(img_size: Sequence[int]) -> tuple[int, int]:
    """Token grid (H', W') the stem makes of an (H, W) input: (33, 64) -> (5, 8)."""
    h, w = (int(s) for s in img_size)
    for kernel, stride, padding in STEM_LAYERS:
        h, w = _conv_out(h, kernel, stride, padding), _conv_out(w, kernel, stride, padding)
    return h, w


class ConvStem(nn.Sequential):
    """Conv7x7/2-BN-ReLU, Conv3x3/2-BN-ReLU, Conv3x3/2-BN: (B, C, H, W) -> (B, D, H/8, W/8).

    Convolutions carry no bias (BatchNorm follows each); the last BN has no ReLU after it so
    the embedding can take negative values like a linear patch projection would.
    """

    def __init__(self, in_channels: int, embed_dim: int):
        widths = (in_channels, *STEM_WIDTHS, embed_dim)
        layers: list[nn.Module] = []
        for i, (kernel, stride, padding) in enumerate(STEM_LAYERS):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], kernel, stride, padding, bias=False))
            layers.append(nn.BatchNorm2d(widths[i + 1]))
            if i < len(STEM_LAYERS) - 1:
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self.in_channels = in_channels
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)
