"""Per-item checks and trimming (numpy) and the batched z-score + spectrogram (torch).

Every model window, in training and in classification, is cut and checked by
:func:`window_from_array`.

The adapter, training (after waveform augmentation) and batch classification all call
:func:`spectrogram_batch`, so they apply identical preprocessing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch
from scipy.signal import resample_poly

from quake.data.config import PreprocessConfig, TransformOP

# A channel is flat (dead) when it is exactly constant, or when its standard deviation is below
# this fraction of its mean absolute level: float32 data varies by ~1e-7 of its level at least,
# so anything smaller is rounding noise that z-scoring would blow up.
FLAT_RELATIVE_TOLERANCE = 1e-6
# A window with less than this fraction of its samples inside the data is dropped ("too short");
# from this fraction up it is zero-padded and flagged.
MIN_WINDOW_COVERAGE = 0.5


class SkipTrace(ValueError):
    """A trace or item that cannot be used, with a short reason category and a detail.

    ``reason`` is the category used for counts (``"nan"``, ``"too short"``, ``"unknown channel"``,
    ...); ``str(exc)`` is ``"<reason>: <detail>"``.
    """

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def check_finite(waveform: np.ndarray) -> None:
    """DROP_NAN: raise SkipTrace("nan") when any value is NaN or inf."""
    finite = np.isfinite(waveform)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise SkipTrace("nan", f"{bad} NaN/inf values of {waveform.size}")


def flat_channels(waveform: np.ndarray) -> np.ndarray:
    """Boolean per channel of a ``(C, n)`` array: True where the channel is flat (dead).

    The same rule as the z-score's: exactly constant, or std <= FLAT_RELATIVE_TOLERANCE * |mean|.
    """
    x = np.asarray(waveform, dtype=np.float32)
    mean = x.mean(axis=-1, keepdims=True)
    std = np.sqrt(np.square(x - mean).mean(axis=-1))
    constant = x.max(axis=-1) == x.min(axis=-1)
    return constant | (std <= FLAT_RELATIVE_TOLERANCE * np.abs(mean[..., 0]))


def resample_waveform(waveform: np.ndarray, from_hz: float, to_hz: float) -> np.ndarray:
    """Resample ``(..., n)`` along the last axis with a polyphase anti-alias filter.

    The ratio is approximated by a fraction with denominator <= 1000 (exact for the usual
    40/50/100/125/200/500 Hz rates). Output length is ``ceil(n * to_hz / from_hz)``.
    """
    if from_hz <= 0 or to_hz <= 0:
        raise ValueError(f"sampling rates must be > 0, got from_hz={from_hz!r}, to_hz={to_hz!r}")
    if math.isclose(from_hz, to_hz, rel_tol=1e-9):
        return np.asarray(waveform, dtype=np.float32)
    ratio = Fraction(to_hz / from_hz).limit_denominator(1000)
    x = np.asarray(waveform, dtype=np.float64)
    y = resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)
    return y.astype(np.float32)


def window_start_sample(
    config: PreprocessConfig, n_samples: int, anchor_sample: float | None = None
) -> int:
    """First sample of the TRIMMING window (may be negative, then the window is front-padded).

    ``anchor="p_arrival"``: ``pre_arrival_s`` before ``anchor_sample`` (the P arrival, or the
    origin time when there is no P); without an anchor sample it falls back to the trace start.
    ``"start"``: the trace start. ``"offset"``: ``offset_s`` after the trace start.
    """
    del n_samples  # the start never depends on the length; kept for a uniform signature
    if config.anchor == "p_arrival":
        if anchor_sample is None or not np.isfinite(anchor_sample):
            return 0
        return int(round(anchor_sample - config.pre_arrival_s * config.sampling_rate_hz))
    if config.anchor == "offset":
        return int(round(config.offset_s * config.sampling_rate_hz))
    return 0


def trim_window(
    waveform: np.ndarray, config: PreprocessConfig, anchor_sample: float | None = None
) -> tuple[np.ndarray, bool]:
    """TRIMMING: cut ``(3, n)`` to ``(3, window_samples)``; returns ``(window, padded)``.

    Samples of the window outside the data are zeros and ``padded`` is True. When less than
    half of the window (:data:`MIN_WINDOW_COVERAGE`) lies inside the data, raise
    ``SkipTrace("too short")``.
    """
    n = waveform.shape[-1]
    size = config.window_samples
    start = window_start_sample(config, n, anchor_sample)
    lo, hi = max(start, 0), min(start + size, n)
    covered = max(hi - lo, 0)
    if covered < MIN_WINDOW_COVERAGE * size:
        raise SkipTrace(
            "too short",
            f"{covered} of {size} window samples inside a {n}-sample trace "
            f"(window starts at sample {start}; need at least {MIN_WINDOW_COVERAGE:.0%})",
        )
    if lo == start and hi == start + size:
        return np.ascontiguousarray(waveform[:, lo:hi], dtype=np.float32), False
    window = np.zeros((waveform.shape[0], size), dtype=np.float32)
    window[:, lo - start : hi - start] = waveform[:, lo:hi]
    return window, True


def window_from_array(
    waveform: np.ndarray,
    config: PreprocessConfig,
    *,
    sampling_rate_hz: float | None = None,
    anchor_sample: float | None = None,
    copy_z_rows: Sequence[int] = (),
    transforms: TransformOP | None = None,
) -> tuple[np.ndarray, bool, np.ndarray]:
    """``(3, n)`` float32 Z, N, E -> ``(window, padded, flat)``: the model's window, checked.

    Training (the adapter) and classification (``window_from_stream``) both cut their windows
    here, so they drop the same windows for the same reasons. In this order:

    - DROP_NAN: any NaN or inf in the whole trace as given -> SkipTrace ``nan``;
    - ``copy_z_rows`` overwritten by a copy of Z (the ``copy_z`` missing-component policy);
    - resampling from ``sampling_rate_hz`` (default: already at the config's rate) to the
      config's rate; a channel flat before stays flat (the filter would ring at its edges);
    - TRIMMING at ``anchor_sample`` (samples of ``sampling_rate_hz``) -> ``too short``, or,
      without TRIMMING, anything but ``window_samples`` long -> ``wrong length``;
    - all three channels flat -> ``dead``.

    ``transforms`` (default ``config.transforms``) says which of DROP_NAN and TRIMMING apply.
    ``flat`` is the per-channel flat mask of the window.
    """
    steps = config.transforms if transforms is None else transforms
    if TransformOP.DROP_NAN in steps:
        check_finite(waveform)
    if len(copy_z_rows):
        waveform = waveform.copy()
        waveform[list(copy_z_rows)] = waveform[0]
    rate = config.sampling_rate_hz if sampling_rate_hz is None else float(sampling_rate_hz)
    if not math.isclose(rate, config.sampling_rate_hz, rel_tol=1e-9):
        flat_before = flat_channels(waveform)
        constants = waveform[:, 0].copy()
        waveform = resample_waveform(waveform, rate, config.sampling_rate_hz)
        # the anti-alias filter rings at the edges of a constant channel: keep dead channels dead
        waveform[flat_before] = constants[flat_before, None]
        if anchor_sample is not None:
            anchor_sample = anchor_sample * config.sampling_rate_hz / rate
    if TransformOP.TRIMMING in steps:
        window, padded = trim_window(waveform, config, anchor_sample)
    elif waveform.shape[1] == config.window_samples:
        window, padded = np.ascontiguousarray(waveform), False
    else:
        raise SkipTrace(
            "wrong length",
            f"{waveform.shape[1]} samples without TRIMMING; expected {config.window_samples}",
        )
    flat = flat_channels(window)
    if flat.all():
        raise SkipTrace("dead", "all three channels are flat")
    return window, padded, flat


def _zscore(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[-1]
    mean = x.mean(dim=-1, keepdim=True)
    centered = x - mean
    std = torch.linalg.vector_norm(centered, dim=-1, keepdim=True).div_(n**0.5)
    flat = (x.amax(dim=-1, keepdim=True) == x.amin(dim=-1, keepdim=True)) | (
        std <= FLAT_RELATIVE_TOLERANCE * mean.abs()
    )
    scaled = centered.div_(std.clamp_min(torch.finfo(torch.float32).tiny)).masked_fill_(flat, 0.0)
    return scaled, flat.squeeze(-1)


def zscore_batch(waveforms: torch.Tensor) -> torch.Tensor:
    """ZSCORE per item and channel along the last axis; flat channels become zeros (never NaN)."""
    return _zscore(waveforms.to(torch.float32))[0]


@lru_cache(maxsize=8)
def _hann(nperseg: int, device: str) -> torch.Tensor:
    return torch.hann_window(nperseg, periodic=True, dtype=torch.float32, device=device)


def _stft_window(nperseg: int, device: torch.device) -> torch.Tensor:
    """The cached Hann window; a fresh one while torch.export/compile traces, so that a traced
    (fake) tensor never enters the cache and breaks later eager calls."""
    if torch.compiler.is_compiling():
        return torch.hann_window(nperseg, periodic=True, dtype=torch.float32, device=device)
    return _hann(nperseg, str(device))


def spectrogram_batch(
    waveforms: torch.Tensor, config: PreprocessConfig, *, window: torch.Tensor | None = None
) -> torch.Tensor:
    """``(B, 3, n)`` window-trimmed waveforms -> ``(B, 3, F, T)`` float32, fully batched.

    Applies ZSCORE (per trace and channel, flat channel -> zeros) and SPECTROGRAM (``torch.stft``
    magnitude, Hann window, no centre padding, ``log1p`` when ``config.log_spectrogram``) as
    ``config.transforms`` says. Without SPECTROGRAM the (z-scored) waveforms are returned as is.
    ``window`` is the STFT window (default: a cached periodic Hann window of
    ``config.stft_nperseg``); a module that is exported or compiled passes its own buffer.
    """
    if not isinstance(waveforms, torch.Tensor):
        waveforms = torch.as_tensor(np.asarray(waveforms))
    if waveforms.ndim != 3 or waveforms.shape[1] != 3:
        raise ValueError(
            f"waveforms must have shape (batch, 3, samples), got {tuple(waveforms.shape)}"
        )
    x = waveforms.to(torch.float32)
    if TransformOP.ZSCORE in config.transforms:
        x, _ = _zscore(x)
    if TransformOP.SPECTROGRAM not in config.transforms:
        return x
    batch, channels, n = x.shape
    if n < config.stft_nperseg:
        raise ValueError(
            f"waveforms have {n} samples, fewer than stft_nperseg={config.stft_nperseg}; "
            "expected window-trimmed waveforms"
        )
    spec = torch.stft(
        x.reshape(batch * channels, n),
        n_fft=config.stft_nperseg,
        hop_length=config.stft_hop,
        window=_stft_window(config.stft_nperseg, x.device) if window is None else window,
        center=False,
        return_complex=True,
    )
    # |z| as sqrt(re^2 + im^2) on the real view: same values as .abs(), several times faster on CPU
    parts = torch.view_as_real(spec)
    re, im = parts[..., 0], parts[..., 1]
    spec = (re * re).addcmul_(im, im).sqrt_()
    if config.log_spectrogram:
        spec = spec.log1p_()
    return spec.reshape(batch, channels, spec.shape[-2], spec.shape[-1]).contiguous()
