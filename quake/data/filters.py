"""Seismological filters of a window: detrend, cosine taper, Butterworth band-pass.

They run on each trimmed window, per channel, in this order (as with obspy: ``detrend``,
``taper``, ``filter("bandpass", ...)``), before the z-score, when the
:class:`~quake.data.PreprocessConfig` asks for them (by default: linear, 5 %, 1 Hz to 90 % of
the Nyquist frequency; models saved before that default had them off).

The three steps are linear in the window, so for a window of ``n`` samples the whole chain is
one ``(n, n)`` matrix. :func:`filter_waveforms` (scipy, float64) defines the chain,
:func:`filter_matrix` applies it once to the identity, and :class:`WaveformFilter` applies the
matrix as one product. :func:`~quake.data.transforms.spectrogram_batch` uses that module, so
training, classification and the ONNX export (a MatMul in the graph) filter with the same
numbers. The price: ``n**2`` float32 entries (16 MB at the default 2048 samples) and ``2 n``
operations per sample.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from scipy.signal import butter, detrend, sosfiltfilt
from torch import nn

from quake.data.config import band_corners

if TYPE_CHECKING:
    from quake.data.config import PreprocessConfig


class FilterSettings(NamedTuple):
    """The filter fields of a :class:`~quake.data.PreprocessConfig`, hashable (a cache key)."""

    sampling_rate_hz: float
    detrend: str = "none"
    taper_fraction: float = 0.0
    bandpass_hz: tuple[float, float | None] | None = None
    bandpass_order: int = 4

    @classmethod
    def of(cls, config: PreprocessConfig | FilterSettings) -> FilterSettings:
        return cls(*(getattr(config, name) for name in cls._fields))


def cosine_taper(n: int, fraction: float) -> np.ndarray:
    """``(n,)`` weights: a half-cosine ramp over ``int(fraction * n)`` samples at each end and
    ones between, the taper of obspy's ``Trace.taper(max_percentage=fraction)`` (Hann type).
    It brings both ends to zero, so the band-pass does not ring on the window's edges."""
    width = int(fraction * n)
    taper = np.ones(n)
    if width:
        ramp = 0.5 * (1.0 - np.cos(np.pi * np.arange(width) / width))
        taper[:width] = ramp
        taper[n - width :] = ramp[::-1]
    return taper


def bandpass_sos(config: PreprocessConfig | FilterSettings) -> np.ndarray:
    """Second-order sections of the Butterworth band-pass of ``bandpass_hz`` (an open high
    corner: :func:`~quake.data.config.band_corners`) and ``bandpass_order`` at the config's
    sampling rate (every window is resampled to it first)."""
    if config.bandpass_hz is None:
        raise ValueError("bandpass_hz is None; expected (low, high) corners in Hz")
    return butter(
        config.bandpass_order,
        band_corners(config.bandpass_hz, config.sampling_rate_hz),
        btype="bandpass",
        fs=config.sampling_rate_hz,
        output="sos",
    )


def filter_waveforms(x: np.ndarray, config: PreprocessConfig | FilterSettings) -> np.ndarray:
    """The configured filters on ``(..., n)`` along the last axis, in float64.

    - ``detrend``: ``"demean"`` removes each trace's mean, ``"linear"`` its least-squares line
      (mean included), as ``scipy.signal.detrend`` and obspy's ``Trace.detrend``.
    - ``taper_fraction``: :func:`cosine_taper`.
    - ``bandpass_hz``: Butterworth of ``bandpass_order`` run forwards and backwards
      (``scipy.signal.sosfiltfilt``, its default odd padding of the ends). Zero-phase, because
      a causal filter delays each frequency by its group delay (tenths of a second near a 1 Hz
      corner), moving the P onset away from where the window's anchor placed it, differently
      for each band; the whole window is at hand in training and classification, so causality
      would buy nothing. The effective order is twice ``bandpass_order``, as with obspy's
      ``filter("bandpass", corners=bandpass_order, zerophase=True)``, which differs from this
      only within about a second of the window's ends (it pads with zeros).

    This is the definition that :class:`WaveformFilter` applies as a matrix.
    """
    y = np.asarray(x, dtype=np.float64)
    if config.detrend != "none":
        y = detrend(y, axis=-1, type="constant" if config.detrend == "demean" else "linear")
    if config.taper_fraction > 0:
        y = y * cosine_taper(y.shape[-1], config.taper_fraction)
    if config.bandpass_hz is not None:
        y = sosfiltfilt(bandpass_sos(config), y, axis=-1)
    return y


def filter_matrix(config: PreprocessConfig | FilterSettings, n_samples: int) -> np.ndarray:
    """``R`` of shape ``(n, n)``, float64, with ``filter_waveforms(x) == x @ R``: row ``i`` is
    the filtered unit impulse at sample ``i``."""
    return np.ascontiguousarray(filter_waveforms(np.eye(n_samples), config))


class WaveformFilter(nn.Module):
    """The configured filters of ``(..., n)`` float32 windows as one matrix product.

    The mean of each trace is taken out before the product and added back through the
    filter's response to a constant, so an offset of thousands of counts costs no float32
    precision in the signal. The product always runs in float32: under bf16 autocast (batch
    classification with ``--amp``) it would lose three digits.
    """

    def __init__(self, config: PreprocessConfig | FilterSettings, n_samples: int):
        super().__init__()
        self.settings = FilterSettings.of(config)
        matrix = filter_matrix(self.settings, n_samples)
        self.register_buffer("matrix", torch.from_numpy(matrix).float(), persistent=False)
        response = torch.from_numpy(matrix.sum(axis=0)).float()
        self.register_buffer("constant_response", response, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.matrix.shape[0]:
            raise ValueError(
                f"windows have {x.shape[-1]} samples; this filter was built for "
                f"{self.matrix.shape[0]}"
            )
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self.forward(x)
        x = x.float()
        mean = x.mean(dim=-1, keepdim=True)
        return torch.matmul(x - mean, self.matrix) + mean * self.constant_response

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.settings._asdict().items())


def waveform_filter(
    config: PreprocessConfig | FilterSettings, n_samples: int, device: torch.device | str = "cpu"
) -> WaveformFilter:
    """The :class:`WaveformFilter` of ``config`` on ``device``, built once per process (a
    fresh one while torch.export/compile traces, so that no traced tensor enters the cache)."""
    settings = FilterSettings.of(config)
    if torch.compiler.is_compiling():
        return WaveformFilter(settings, n_samples).to(device)
    return _cached_filter(settings, n_samples, str(device))


@lru_cache(maxsize=4)
def _cached_filter(settings: FilterSettings, n_samples: int, device: str) -> WaveformFilter:
    return WaveformFilter(settings, n_samples).to(device)
