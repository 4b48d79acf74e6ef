"""Spectrograms of overlapping windows cut from one spectrogram of the whole recording.

Neighbouring windows of a continuous recording overlap, so their STFT frames are the same
frames: the recording's STFT is computed once and each window's ``(3, F, T)`` spectrogram is a
slice of it, when every window starts on a multiple of the STFT hop (the stride is a whole
number of hops). What :func:`~quake.data.transforms.spectrogram_batch` does per window is then
redone per slice, exactly: it z-scores the window before its STFT, and the STFT is linear, so

    |STFT((x - m) / s)| = |STFT(x) - m * STFT(1)| / s

with ``m`` and ``s`` the window's own mean and standard deviation (a flat channel gives zeros)
and ``STFT(1)`` the transform of a constant (non-zero only in the lowest bins for a Hann
window); ``log1p`` follows when the config says so. The recording's mean is removed before its
STFT, so the low bins do not hold a large offset that the correction would have to cancel in
float32. Not taken when the config filters its windows (detrend, taper, band-pass: not linear
per window in the same way): :func:`shared_stft_applies` says when.
"""

from __future__ import annotations

import numpy as np
import torch

from quake.data.config import PreprocessConfig, TransformOP
from quake.data.transforms import zscore_stats


def shared_stft_applies(config: PreprocessConfig, stride_samples: int) -> bool:
    """Whether windows ``stride_samples`` apart can take their spectrograms from one STFT of
    the recording: SPECTROGRAM and ZSCORE on, no filter, a stride of whole STFT hops."""
    steps = config.transforms
    return (
        TransformOP.SPECTROGRAM in steps
        and TransformOP.ZSCORE in steps
        and not config.filters_enabled
        and stride_samples % config.stft_hop == 0
    )


def _hann(config: PreprocessConfig) -> torch.Tensor:
    return torch.hann_window(config.stft_nperseg, periodic=True, dtype=torch.float32)


class RecordingSpectrogram:
    """The STFT of a ``(3, n)`` recording, and the spectrograms of its windows.

    ``spectrograms(windows, starts)``: the windows' raw samples ``(B, 3, window_samples)`` (for
    their mean and standard deviation) and their first samples (multiples of the hop) ->
    ``(B, 3, F, T)`` float32, what ``spectrogram_batch(windows, config)`` gives.
    """

    def __init__(self, data: np.ndarray, config: PreprocessConfig):
        if config.filters_enabled or TransformOP.SPECTROGRAM not in config.transforms:
            raise ValueError(
                "a shared STFT needs SPECTROGRAM and ZSCORE without filters; expected a config "
                "for which shared_stft_applies is True"
            )
        self.config = config
        x = np.asarray(data, dtype=np.float64)
        self.offset = x.mean(axis=-1, keepdims=True) if x.shape[-1] else np.zeros((3, 1))
        shifted = torch.from_numpy((x - self.offset).astype(np.float32))
        window = _hann(config)
        self.stft = torch.stft(
            shifted,
            n_fft=config.stft_nperseg,
            hop_length=config.stft_hop,
            window=window,
            center=False,
            return_complex=True,
        )  # (3, F, frames)
        ones = torch.ones(config.stft_nperseg, dtype=torch.float32)
        constant = torch.stft(
            ones[None],
            n_fft=config.stft_nperseg,
            hop_length=config.stft_hop,
            window=window,
            center=False,
            return_complex=True,
        )[0, :, 0]  # (F,): the STFT of a constant 1
        self.constant = constant[None, None, :, None]

    def spectrograms(self, windows: torch.Tensor, starts: np.ndarray) -> torch.Tensor:
        """``(B, 3, F, T)`` spectrograms of the windows starting at ``starts`` (samples)."""
        config = self.config
        hop, frames = config.stft_hop, config.n_frames
        first = torch.as_tensor(np.asarray(starts) // hop, dtype=torch.long)
        index = first[:, None] + torch.arange(frames)[None, :]  # (B, T)
        spec = self.stft[:, :, index]  # (3, F, B, T)
        spec = spec.permute(2, 0, 1, 3)  # (B, 3, F, T)
        offset = torch.from_numpy(self.offset.astype(np.float32))[None]  # (1, 3, 1)
        mean, std, flat = zscore_stats(windows - offset, offset)
        spec = spec - mean[..., None] * self.constant
        parts = torch.view_as_real(spec)
        re, im = parts[..., 0], parts[..., 1]
        magnitude = (re * re).addcmul_(im, im).sqrt_().div_(std[..., None])
        magnitude.masked_fill_(flat[..., None], 0.0)
        if config.log_spectrogram:
            magnitude = magnitude.log1p_()
        return magnitude.contiguous()
