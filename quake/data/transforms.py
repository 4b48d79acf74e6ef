"""Per-item checks and trimming (numpy) and the batched z-score + spectrogram (torch).

Every model window, in training and in classification, is cut and checked by
:func:`window_from_array`.

The adapter, training (after waveform augmentation), batch classification and the ONNX export
all call :func:`spectrogram_batch`, so they apply identical preprocessing (filters, z-score,
spectrogram).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch
from scipy.signal import resample_poly

from quake.data.config import PreprocessConfig, TransformOP
from quake.data.filters import WaveformFilter, waveform_filter
from quake.data.quality import (
    COMPONENTS,
    QualityRecord,
    SkipTrace,  # defined beside the policy that raises it; importable from here as before
    StreamArray,
    apply_policy,
    check_channel,
    fill_description,
    window_coverage,
)

# A channel is flat (dead) when it is exactly constant, or when its standard deviation is below
# this fraction of its mean absolute level: float32 data varies by ~1e-7 of its level at least,
# so anything smaller is rounding noise that z-scoring would blow up.
FLAT_RELATIVE_TOLERANCE = 1e-6


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
    with np.errstate(over="ignore"):  # beyond float32 becomes inf: a window's overflow skip
        if math.isclose(from_hz, to_hz, rel_tol=1e-9):
            return np.asarray(waveform, dtype=np.float32)
        ratio = Fraction(to_hz / from_hz).limit_denominator(1000)
        x = np.asarray(waveform, dtype=np.float64)
        y = resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)
        return y.astype(np.float32)


def window_start_sample(
    config: PreprocessConfig,
    n_samples: int,
    anchor_sample: float | None = None,
    recorded: tuple[int, int] | None = None,
    window_index: int = 0,
) -> int:
    """First sample of the TRIMMING window (may be negative, then the window is front-padded);
    ``window_index`` k > 0: the recording's k-th next window, ``k * window_samples`` later.

    ``anchor="p_arrival"``: ``pre_arrival_s`` before ``anchor_sample`` (the P arrival, or the
    origin time when there is no P); without an anchor sample it falls back to the trace start.
    ``"start"``: the trace start. ``"offset"``: ``offset_s`` after the trace start.
    ``recorded``: ``[first, stop)`` of the samples backed by a recording; the trace start is
    then its first recorded sample, even where the recording ends before the window does (its
    end is then padded): a file that begins with a dropout must not put a flat stretch and then
    noise, which a spectrogram model reads as an onset, into a window cut without an anchor.
    """
    del n_samples  # the start never depends on the length; kept for a uniform signature
    return _first_window_start(config, anchor_sample, recorded) + window_index * (
        config.window_samples
    )


def _first_window_start(
    config: PreprocessConfig, anchor_sample: float | None, recorded: tuple[int, int] | None
) -> int:
    if _starts_at_trace_start(config, anchor_sample):
        if recorded is None:
            return 0
        return recorded[0]
    if config.anchor == "offset":
        return int(round(config.offset_s * config.sampling_rate_hz))
    return int(round(anchor_sample - config.pre_arrival_s * config.sampling_rate_hz))


def _starts_at_trace_start(config: PreprocessConfig, anchor_sample: float | None) -> bool:
    """Whether the window starts at the trace start (``anchor="start"``, or ``"p_arrival"``
    without a finite anchor sample): the one case where ``recorded`` moves it."""
    if config.anchor == "p_arrival":
        return anchor_sample is None or not np.isfinite(anchor_sample)
    return config.anchor == "start"


def window_bounds(
    config: PreprocessConfig,
    n_samples: int,
    anchor_sample: float | None = None,
    recorded: tuple[int, int] | None = None,
    window_index: int = 0,
) -> tuple[int, int, int]:
    """TRIMMING as indices: ``(start, lo, hi)``; the window is samples ``[start, start +
    window_samples)`` of the trace, of which ``[lo, hi)`` lie inside its ``n_samples``."""
    start = window_start_sample(config, n_samples, anchor_sample, recorded, window_index)
    lo, hi = max(start, 0), min(start + config.window_samples, n_samples)
    return start, lo, max(hi, lo)


def trim_window(
    waveform: np.ndarray,
    config: PreprocessConfig,
    anchor_sample: float | None = None,
    recorded: tuple[int, int] | None = None,
    window_index: int = 0,
) -> tuple[np.ndarray, bool]:
    """TRIMMING: cut ``(C, n)`` to ``(C, window_samples)``; returns ``(window, padded)``.

    Samples of the window outside the data are zeros and ``padded`` is True. Whether enough of
    the window is covered is the quality policy's call (:func:`window_from_array`).
    ``recorded`` and ``window_index``: see :func:`window_start_sample`.
    """
    size = config.window_samples
    start, lo, hi = window_bounds(config, waveform.shape[-1], anchor_sample, recorded, window_index)
    if lo == start and hi == start + size:
        return np.ascontiguousarray(waveform[:, lo:hi]), False
    window = np.zeros((waveform.shape[0], size), dtype=waveform.dtype)
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
    reading: StreamArray | None = None,
    missing: str = "",
    inspect: bool = True,
    window_index: int = 0,
) -> tuple[np.ndarray, QualityRecord]:
    """``(3, n)`` float32 Z, N, E -> ``(window, quality)``: the model's window, checked.

    Training (the adapter) and classification (``window_from_stream``) both cut their windows
    here, so they drop the same windows for the same reasons. In this order:

    - inspection of each channel at its own rate (spikes, clipping, non-finite samples,
      :mod:`quake.data.quality`), repaired as ``config.quality`` says; a ``reading`` (a stream
      converted by :func:`~quake.data.components.stream_to_array_info`) was inspected already
      and brings its record and its mask of recorded samples (gaps);
    - ``missing`` components (letters the metadata says were not recorded; their rows hold
      zeros) and ``copy_z_rows`` (overwritten by a copy of Z, the ``copy_z`` missing-component
      policy) are named in the record;
    - resampling from ``sampling_rate_hz`` (default: already at the config's rate) to the
      config's rate; a channel flat before stays flat (the filter would ring at its edges);
    - TRIMMING at ``anchor_sample`` (samples of ``sampling_rate_hz``; ``window_index`` k > 0:
      the recording's k-th next window, ``windows_per_recording``), or, without TRIMMING,
      anything but ``window_samples`` long -> ``wrong length``;
    - coverage of the window and of each component: a component mostly outside the recording
      counts as missing (``truncated``) and is filled by the missing-component policy;
    - dead (flat) channels; all three flat -> ``dead``;
    - the policy: SkipTrace ``nan`` (DROP_NAN), ``spike``, ``clipping``, ``too short`` / ``gap`` /
      ``dropout`` (window coverage below ``quality.min_coverage``) or ``missing component``.

    ``transforms`` (default ``config.transforms``) says which of DROP_NAN and TRIMMING apply.
    ``inspect=False`` skips the per-channel inspection of an array, for a trace already
    inspected and found clean (the adapter reads a trace again every epoch; its data do not
    change). The record's times are seconds from the window's first sample.
    """
    steps = config.transforms if transforms is None else transforms
    rate = config.sampling_rate_hz if sampling_rate_hz is None else float(sampling_rate_hz)
    recording = _inspect(waveform, config, rate, anchor_sample, reading, missing, inspect)
    if TransformOP.DROP_NAN in steps and recording.record.non_finite:
        if config.quality.non_finite == "skip":  # the NaN check comes first, whatever the window
            apply_policy(recording.record, config.quality)
    _copy_z(recording, copy_z_rows)
    _resample(recording, config)
    window, backed = _trim(recording, config, steps, window_index)
    _assess(window, backed, recording.record, config, steps)
    return window, recording.record


@dataclass
class _Recording:
    """A recording on its way to a window: its samples at ``rate_hz``, its quality record,
    the mask of recorded samples (None: every sample it holds is recorded) and the anchor."""

    waveform: np.ndarray
    rate_hz: float
    record: QualityRecord
    backed: np.ndarray | None
    anchor_sample: float | None


def _inspect(
    waveform: np.ndarray,
    config: PreprocessConfig,
    rate: float,
    anchor_sample: float | None,
    reading: StreamArray | None,
    missing: str,
    inspect: bool,
) -> _Recording:
    """Step 1: the quality record of the recording (a ``reading`` brings its own), each channel
    inspected at its own rate and repaired as ``config.quality`` says."""
    if reading is not None:
        return _Recording(waveform, rate, reading.quality.copy(), reading.backed, anchor_sample)
    record = QualityRecord()
    record.missing = {c: "absent" for c in missing}
    if missing:
        record.missing_fill = fill_description("zeros")
    if inspect:
        waveform = np.stack(
            [
                waveform[row]
                if comp in missing
                else check_channel(waveform[row], comp, rate, config.quality, record)
                for row, comp in enumerate(COMPONENTS)
            ]
        ).astype(np.float32, copy=False)
    backed = _backed_outside_dropouts(record, waveform.shape[1], rate)
    return _Recording(waveform, rate, record, backed, anchor_sample)


def _copy_z(recording: _Recording, rows: Sequence[int]) -> None:
    """Step 2: rows overwritten by a copy of Z (the ``copy_z`` missing-component policy)."""
    if not len(rows):
        return
    recording.waveform = recording.waveform.copy()
    recording.waveform[list(rows)] = recording.waveform[0]
    for row in rows:
        recording.record.missing.setdefault(COMPONENTS[row], "absent")
    recording.record.missing_fill = fill_description("copy_z")


def _resample(recording: _Recording, config: PreprocessConfig) -> None:
    """Step 3: the recording at the config's rate; a channel flat before stays flat (the
    anti-alias filter would ring at its edges), the recorded-sample mask and the anchor follow."""
    rate, target = recording.rate_hz, config.sampling_rate_hz
    if math.isclose(rate, target, rel_tol=1e-9):
        return
    waveform = recording.waveform
    flat_before = flat_channels(waveform)
    constants = waveform[:, 0].copy()
    n_before = waveform.shape[1]
    waveform = resample_waveform(waveform, rate, target)
    waveform[flat_before] = constants[flat_before, None]
    if recording.backed is not None:  # nearest recorded-sample flag on the new grid
        idx = np.minimum((np.arange(waveform.shape[1]) * rate / target).astype(int), n_before - 1)
        recording.backed = recording.backed[:, idx]
    if recording.anchor_sample is not None:
        recording.anchor_sample = recording.anchor_sample * target / rate
    recording.waveform, recording.rate_hz = waveform, target
    recording.record.resampled_from_hz = rate


def _trim(
    recording: _Recording, config: PreprocessConfig, steps: TransformOP, window_index: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Step 4: TRIMMING (or a check of the length without it) -> the window and its mask of
    recorded samples; the record moves to the window's time and counts the padding."""
    waveform, record, anchor = recording.waveform, recording.record, recording.anchor_sample
    n = waveform.shape[1]
    recorded = None
    if recording.backed is not None and _starts_at_trace_start(config, anchor):
        recorded = _recorded_span(recording.backed, record)
    if TransformOP.TRIMMING in steps:
        start, lo, hi = window_bounds(config, n, anchor, recorded, window_index)
        window, _ = trim_window(waveform, config, anchor, recorded, window_index)
        backed = recording.backed
        if backed is not None:
            backed, _ = trim_window(backed, config, anchor, recorded, window_index)
    elif n == config.window_samples:
        start, lo, hi = 0, 0, n
        window, backed = np.ascontiguousarray(waveform), recording.backed
    else:
        raise SkipTrace(
            "wrong length", f"{n} samples without TRIMMING; expected {config.window_samples}"
        )
    sr = config.sampling_rate_hz
    if record.has_events():
        recording.record = record = record.shifted(start / sr, config.window_s)
    record.padded_s = (config.window_samples - (hi - lo)) / sr
    if backed is None:  # an array without dropouts: recorded wherever it has samples
        record.coverage = (hi - lo) / config.window_samples
    return window, backed


def _assess(
    window: np.ndarray,
    backed: np.ndarray | None,
    record: QualityRecord,
    config: PreprocessConfig,
    steps: TransformOP,
) -> None:
    """Step 5: coverage (gaps, dropouts, components that end early), dead channels, then the
    policy: a SkipTrace naming why the window is not used, or the record of what was found."""
    overflow = overflow_description(window)
    if overflow:
        raise SkipTrace("overflow", overflow)
    if backed is not None:
        _drop_truncated_components(window, backed, record, config)
        record.coverage = window_coverage(backed, record.components)
    flat = flat_channels(window)
    record.dead = "".join(
        c for c, f in zip(COMPONENTS, flat, strict=True) if f and c not in record.missing
    )
    if TransformOP.DROP_NAN not in steps:
        record.non_finite = 0
    apply_policy(record, config.quality)
    if flat.all():
        raise SkipTrace("dead", "all three channels are flat")


def overflow_description(window: np.ndarray) -> str:
    """Which channels of a float32 window the model cannot z-score, and why; empty when all can.

    Samples beyond the float32 range become inf when a float64 record is cast, and samples
    within it but above ~1e19 overflow the sums of the z-score (the network would see zeros):
    either way the numbers are not the ground's, and the window is skipped as ``overflow``."""
    x = np.asarray(window, dtype=np.float64)
    limit = float(np.finfo(np.float32).max)
    with np.errstate(over="ignore", invalid="ignore"):
        centered = x - x.mean(axis=-1, keepdims=True)
        bad = ~np.isfinite(x).all(axis=-1) | (np.square(centered).sum(axis=-1) >= limit)
        bad |= np.abs(x).sum(axis=-1) >= limit
    if not bad.any():
        return ""
    peak = float(np.nanmax(np.abs(x[bad])))
    channels = ", ".join(c for c, b in zip(COMPONENTS, bad, strict=True) if b)
    return (
        f"{channels}: samples up to {peak:.3g} overflow float32 (the model's dtype) in the "
        "z-score; expected amplitudes below about 1e18"
    )


def _backed_outside_dropouts(
    record: QualityRecord, n_samples: int, rate_hz: float
) -> np.ndarray | None:
    """An array's mask of recorded samples: everywhere but its dropouts and missing rows;
    None when it has no dropout (then every sample it holds counts as recorded)."""
    if not record.dropouts:
        return None
    backed = np.ones((len(COMPONENTS), n_samples), dtype=bool)
    for comp in record.missing:
        backed[COMPONENTS.index(comp)] = False
    mark_unrecorded(backed, record.dropouts, rate_hz)
    return backed


def mark_unrecorded(
    backed: np.ndarray, spans: Sequence[tuple[str, float, float]], rate_hz: float
) -> None:
    """Set ``backed`` False over each ``(component, start_s, length_s)`` span."""
    n = backed.shape[1]
    for comp, start_s, length_s in spans:
        a = int(round(start_s * rate_hz))
        b = a + int(round(length_s * rate_hz))
        backed[COMPONENTS.index(comp), max(a, 0) : max(min(b, n), 0)] = False


def _recorded_span(backed: np.ndarray, record: QualityRecord) -> tuple[int, int] | None:
    """``[first, stop)`` of the samples recorded on any component present; None if none is."""
    rows = [COMPONENTS.index(c) for c in COMPONENTS if c not in record.missing] or [0, 1, 2]
    any_row = backed[rows].any(axis=0)
    if not any_row.any():
        return None
    return int(np.argmax(any_row)), int(any_row.size - np.argmax(any_row[::-1]))


def _drop_truncated_components(
    window: np.ndarray, backed: np.ndarray, record: QualityRecord, config: PreprocessConfig
) -> None:
    """A component recorded over less than ``quality.min_coverage`` of the window while another
    covers it is missing (``truncated``): filled by the missing-component policy, not used half
    empty."""
    present = [c for c in COMPONENTS if c not in record.missing]
    per_row = backed.mean(axis=1)
    covered = {c: float(per_row[COMPONENTS.index(c)]) for c in present}
    best = max(covered.values(), default=0.0)
    for comp in present:
        if covered[comp] < config.quality.min_coverage <= best:
            row = COMPONENTS.index(comp)
            record.missing[comp] = "truncated"
            z_ok = comp != "Z" and "Z" not in record.missing
            window[row] = window[0] if config.missing_component == "copy_z" and z_ok else 0.0
            backed[row] = False
            record.missing_fill = fill_description(config.missing_component, z_ok)
    record.components = "".join(c for c in COMPONENTS if c not in record.missing)


def _centered(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x - mean, std, flat)`` along the last axis; ``flat`` by :func:`flat_channels`' rule."""
    n = x.shape[-1]
    mean = x.mean(dim=-1, keepdim=True)
    centered = x - mean
    std = torch.linalg.vector_norm(centered, dim=-1, keepdim=True).div_(n**0.5)
    flat = (x.amax(dim=-1, keepdim=True) == x.amin(dim=-1, keepdim=True)) | (
        std <= FLAT_RELATIVE_TOLERANCE * mean.abs()
    )
    return centered, std, flat


def zscore_stats(
    x: torch.Tensor, offset: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean, std, flat)`` along the last axis (kept as a length-1 axis) of what ZSCORE
    divides by: the z-scored signal is ``(x - mean) / std``, zeros where ``flat``. For a caller
    that z-scores a linear transform of ``x`` instead of ``x`` (a spectrogram cut from a longer
    one, :mod:`quake.annotate.spectrogram`). ``x`` may be given less a constant ``offset`` (for
    precision): ``mean`` is then that of ``x - offset``, and ``flat`` is still judged on ``x``
    (:func:`flat_channels`' rule compares the spread with the level)."""
    x = x.to(torch.float32)
    _, std, flat = _centered(x)
    mean = x.mean(dim=-1, keepdim=True)
    if offset is not None:
        constant = x.amax(dim=-1, keepdim=True) == x.amin(dim=-1, keepdim=True)
        flat = constant | (std <= FLAT_RELATIVE_TOLERANCE * (mean + offset).abs())
    return mean, std.clamp_min(torch.finfo(torch.float32).tiny), flat


def _zscore(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    centered, std, flat = _centered(x)
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
    waveforms: torch.Tensor,
    config: PreprocessConfig,
    *,
    window: torch.Tensor | None = None,
    filters: WaveformFilter | None = None,
) -> torch.Tensor:
    """``(B, 3, n)`` window-trimmed waveforms -> ``(B, 3, F, T)`` float32, fully batched.

    Applies the configured filters (detrend, taper, band-pass: :mod:`quake.data.filters`; a
    flat channel stays flat, as zeros), ZSCORE (per trace and channel, flat channel -> zeros)
    and SPECTROGRAM (``torch.stft`` magnitude, Hann window, no centre padding, ``log1p`` when
    ``config.log_spectrogram``) as ``config`` says. Without SPECTROGRAM the (filtered, z-scored)
    waveforms are returned as is. ``window`` is the STFT window (default: a cached periodic Hann
    window of ``config.stft_nperseg``) and ``filters`` the filter module (default: a cached one
    for ``config``); a module that is exported or compiled passes its own.
    """
    if not isinstance(waveforms, torch.Tensor):
        waveforms = torch.as_tensor(np.asarray(waveforms))
    if waveforms.ndim != 3 or waveforms.shape[1] != 3:
        raise ValueError(
            f"waveforms must have shape (batch, 3, samples), got {tuple(waveforms.shape)}"
        )
    n = waveforms.shape[-1]
    if TransformOP.SPECTROGRAM in config.transforms and n < config.stft_nperseg:
        raise ValueError(
            f"waveforms have {n} samples, fewer than stft_nperseg={config.stft_nperseg}; "
            "expected window-trimmed waveforms"
        )
    x = waveforms.to(torch.float32)
    if config.filters_enabled:
        # a dead channel carries no signal: filtered, its float32 rounding would become noise
        # that the z-score blows up to unit variance
        flat = _centered(x)[2]
        if filters is None:
            filters = waveform_filter(config, x.shape[-1], x.device)
        x = filters(x).masked_fill_(flat, 0.0)
    if TransformOP.ZSCORE in config.transforms:
        x, _ = _zscore(x)
    if TransformOP.SPECTROGRAM not in config.transforms:
        return x
    batch, channels, n = x.shape
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
