"""Preprocessing configuration: everything classification must repeat exactly.

A :class:`PreprocessConfig` is saved with every model, so a catalog is classified with the
same sampling rate, window, normalisation and spectrogram as the training data. Seconds are
converted to samples in one place (:attr:`PreprocessConfig.window_samples`).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field
from typing import Any

from quake.data.quality import QualityPolicy, from_known_keys


class TransformOP(enum.Flag):
    """Steps the adapter applies, in this order.

    - ``DROP_NAN``: an item whose waveform holds any NaN or inf is dropped (reason ``nan``);
      the adapter lists every dropped item with its reason in ``adapter.dropped``.
    - ``TRIMMING``: every item is cut to ``window_s`` seconds, starting ``pre_arrival_s`` before
      the P arrival (or origin time), at the trace start, or at ``offset_s``; a window that runs
      past the data is zero-padded and flagged (``trace_padded``); one with less than half of the
      window inside the data is dropped (reason ``too short``). With ``windows_per_recording``
      > 1 the recording's next windows follow the first back to back, each checked alike.
    - filters (not a flag: on when configured; by default a linear detrend, a 5 % taper and a
      1 Hz to 0.9 x Nyquist band-pass): ``detrend``, ``taper_fraction`` and ``bandpass_hz`` /
      ``bandpass_order``, in that order, per item and channel (:mod:`quake.data.filters`); a
      flat (dead) channel becomes zeros.
    - ``ZSCORE``: per item and channel, ``(x - mean) / std``; a flat (dead) channel becomes zeros.
    - ``SPECTROGRAM``: STFT magnitude per channel (Hann window of ``stft_nperseg`` samples, hop
      ``stft_hop``, no centre padding), ``log1p`` when ``log_spectrogram``: float32 ``(3, F, T)``
      with ``F = stft_nperseg // 2 + 1``.
    """

    DROP_NAN = enum.auto()
    TRIMMING = enum.auto()
    ZSCORE = enum.auto()
    SPECTROGRAM = enum.auto()


DEFAULT_TRANSFORMS = (
    TransformOP.DROP_NAN | TransformOP.TRIMMING | TransformOP.ZSCORE | TransformOP.SPECTROGRAM
)

ANCHORS = ("p_arrival", "start", "offset")
MISSING_COMPONENT_POLICIES = ("zeros", "copy_z")
GAP_FILLS = ("interpolate", "zeros")
DETRENDS = ("none", "demean", "linear")  # "linear" removes the mean as well


def transforms_to_names(transforms: TransformOP) -> list[str]:
    """Flag -> list of member names, in declaration order (JSON-safe)."""
    return [op.name for op in TransformOP if op in transforms and op.name is not None]


def transforms_from_names(names: Any) -> TransformOP:
    """List of names (or a ``"A|B"`` string, or a TransformOP) -> flag; ValueError on unknown names."""
    if isinstance(names, TransformOP):
        return names
    if isinstance(names, str):
        names = [n for n in names.replace(",", "|").split("|") if n.strip()]
    result = TransformOP(0)
    allowed = [op.name for op in TransformOP]
    for name in names:
        key = str(name).strip().upper()
        if key not in allowed:
            raise ValueError(f"unknown transform {name!r}; expected one of {allowed}")
        result |= TransformOP[key]
    return result


@dataclass
class PreprocessConfig:
    """How a waveform becomes a model input. Validated on creation."""

    sampling_rate_hz: float = 100.0
    window_s: float = 20.48
    anchor: str = "p_arrival"
    pre_arrival_s: float = 2.0
    offset_s: float = 0.0
    # Consecutive windows per recording, back to back from the first: signals that outlast one
    # window (surface events) are seen whole. Each is an item in training; in classification a
    # station's windows are pooled by the station-to-event rule (quake.probabilities).
    windows_per_recording: int = 1
    missing_component: str = "zeros"
    gap_fill: str = "interpolate"
    min_sampling_rate_hz: float = 20.0
    stft_nperseg: int = 64
    # 0.64 s at 100 Hz: (3, 33, 32) spectrograms. Half the tokens of a hop of 32, so half the
    # cost of an epoch, for the same accuracy per epoch on the synthetic set.
    stft_hop: int = 64
    log_spectrogram: bool = True
    # Filters of each window before the z-score (quake.data.filters): by default a linear
    # detrend, a 5 % taper and a band-pass from 1 Hz to 90 % of the Nyquist frequency. Below
    # 1 Hz lies microseism, which sets the z-score of a quiet station and hides a weak local
    # event in the bands above it (benchmarks/results.md).
    detrend: str = "linear"
    taper_fraction: float = 0.05  # of the window, at each end (obspy's max_percentage)
    # (low, high) corners in Hz; high None: 90 % of the Nyquist frequency; None: no band-pass
    bandpass_hz: tuple[float, float | None] | None = (1.0, None)
    bandpass_order: int = 4  # Butterworth order (obspy's corners); zero-phase doubles it
    transforms: TransformOP = field(default=DEFAULT_TRANSFORMS)
    quality: QualityPolicy = field(default_factory=QualityPolicy)

    def __post_init__(self) -> None:
        self.transforms = transforms_from_names(self.transforms)
        self.quality = QualityPolicy.from_dict(self.quality)
        _check_positive("sampling_rate_hz", self.sampling_rate_hz)
        _check_positive("window_s", self.window_s)
        _check_positive("min_sampling_rate_hz", self.min_sampling_rate_hz)
        for name in ("pre_arrival_s", "offset_s"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        _check_choice("anchor", self.anchor, ANCHORS)
        n = self.windows_per_recording
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"windows_per_recording must be an integer >= 1, got {n!r}")
        _check_choice("missing_component", self.missing_component, MISSING_COMPONENT_POLICIES)
        _check_choice("gap_fill", self.gap_fill, GAP_FILLS)
        for name in ("stft_nperseg", "stft_hop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.stft_nperseg < 2:
            raise ValueError(f"stft_nperseg must be >= 2, got {self.stft_nperseg!r}")
        if not isinstance(self.log_spectrogram, bool):
            raise ValueError(f"log_spectrogram must be True or False, got {self.log_spectrogram!r}")
        _check_choice("detrend", self.detrend, DETRENDS)
        tf = self.taper_fraction
        if not _is_number(tf) or not 0 <= tf <= 0.5:
            raise ValueError(f"taper_fraction must be a number in [0, 0.5], got {tf!r}")
        order = self.bandpass_order
        if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 10:
            raise ValueError(f"bandpass_order must be an integer in [1, 10], got {order!r}")
        if self.bandpass_hz is not None:
            self.bandpass_hz = _check_band(self.bandpass_hz, self.sampling_rate_hz)
            # scipy's sosfiltfilt pads each end with 3 * (2 * order + 1) samples at most
            if self.window_samples <= 3 * (2 * order + 1):
                raise ValueError(
                    f"a window of {self.window_samples} samples is too short for a band-pass "
                    f"of order {order}; expected more than {3 * (2 * order + 1)} samples"
                )
        if TransformOP.SPECTROGRAM in self.transforms and self.stft_nperseg > self.window_samples:
            raise ValueError(
                f"stft_nperseg={self.stft_nperseg} is longer than the window "
                f"({self.window_samples} samples = {self.window_s} s at {self.sampling_rate_hz} Hz); "
                "expected stft_nperseg <= window_samples"
            )

    @property
    def filters_enabled(self) -> bool:
        """Whether any of detrend, taper and band-pass is on."""
        return self.detrend != "none" or self.taper_fraction > 0 or self.bandpass_hz is not None

    @property
    def window_samples(self) -> int:
        """The TRIMMING window in samples: the one place seconds become samples."""
        return int(round(self.window_s * self.sampling_rate_hz))

    @property
    def n_frequencies(self) -> int:
        return self.stft_nperseg // 2 + 1

    @property
    def n_frames(self) -> int:
        """STFT frames of one window (no centre padding)."""
        return 1 + (self.window_samples - self.stft_nperseg) // self.stft_hop

    @property
    def spectrogram_shape(self) -> tuple[int, int, int]:
        """``(3, F, T)`` of one spectrogram, ``F = stft_nperseg // 2 + 1``."""
        return (3, self.n_frequencies, self.n_frames)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """What the adapter yields per item: the spectrogram shape, or ``(3, window_samples)``
        when SPECTROGRAM is not among the transforms."""
        if TransformOP.SPECTROGRAM in self.transforms:
            return self.spectrogram_shape
        return (3, self.window_samples)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (transforms as a list of names); inverse of :meth:`from_dict`."""
        d = dataclasses.asdict(self)
        d["transforms"] = transforms_to_names(self.transforms)
        if self.bandpass_hz is not None:
            d["bandpass_hz"] = list(self.bandpass_hz)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        """A config from :meth:`to_dict`'s output or a partial one; keys it lacks take the
        defaults."""
        return from_known_keys(cls, d, "PreprocessConfig")

    @classmethod
    def from_saved(cls, d: dict[str, Any]) -> PreprocessConfig:
        """The config a model was saved with: keys it lacks (a model saved before they
        existed) take the values of that time, :data:`FILTERS_OFF`, else the defaults."""
        return cls.from_dict({**FILTERS_OFF, **d})

    def replace(self, **changes: Any) -> PreprocessConfig:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


#: The filters off. Also what a saved model's preprocessing was where its config lacks these
#: keys: the filters were off before they existed, and stayed off by default until the 1 Hz
#: band-pass became the default.
FILTERS_OFF: dict[str, Any] = {"detrend": "none", "taper_fraction": 0.0, "bandpass_hz": None}


def with_keys_of_before(saved: dict[str, Any]) -> dict[str, Any]:
    """A run folder's saved config (``data.preprocess`` inside) whose preprocessing lacks keys
    (a run started before they existed) with the values of that time, :data:`FILTERS_OFF`: a
    run started without filters is not resumed with those of today's defaults."""
    data = saved.get("data") if isinstance(saved, dict) else None
    preprocess = data.get("preprocess") if isinstance(data, dict) else None
    if not isinstance(preprocess, dict):
        return saved  # not a config: from_dict names what is wrong with it
    return {**saved, "data": {**saved["data"], "preprocess": {**FILTERS_OFF, **preprocess}}}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_positive(name: str, value: object) -> None:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:  # type: ignore[arg-type]
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


#: The high corner of a band-pass whose high corner is left open (null), as a share of the
#: Nyquist frequency: what the resampling's anti-alias filter leaves.
OPEN_HIGH_CORNER = 0.9


def band_corners(band: tuple[float, float | None], sampling_rate_hz: float) -> tuple[float, float]:
    """``(low, high)`` in Hz of a checked ``bandpass_hz``, an open high corner (None) made
    :data:`OPEN_HIGH_CORNER` times the Nyquist frequency of ``sampling_rate_hz``."""
    low, high = band
    return (low, OPEN_HIGH_CORNER * sampling_rate_hz / 2 if high is None else high)


def _check_band(band: object, sampling_rate_hz: float) -> tuple[float, float | None]:
    """``(low, high)`` in Hz with ``0 < low < high <`` Nyquist of the config's rate (every window
    is resampled to it before filtering); ``high`` None is :func:`band_corners`' open corner."""
    nyquist = sampling_rate_hz / 2
    expected = (
        f"expected [low, high] with 0 < low < high < {nyquist:g} Hz, or [low, null] with "
        f"low < {OPEN_HIGH_CORNER * nyquist:g} Hz"
    )
    if isinstance(band, (str, bytes)) or not hasattr(band, "__len__") or len(band) != 2:
        raise ValueError(f"bandpass_hz must be two corners in Hz, got {band!r}; {expected}")
    low, high = band
    for name, value in (("low", low), ("high", high)):
        if value is None and name == "high":
            continue  # the open corner
        if not _is_number(value) or not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"bandpass_hz {name} corner must be a finite number > 0 Hz, got {value!r}; "
                f"{expected}"
            )
    if high is None:
        top = OPEN_HIGH_CORNER * nyquist
        if low >= top:
            raise ValueError(
                f"bandpass_hz low corner {low!r} Hz is not below the open high corner "
                f"{top:g} Hz ({OPEN_HIGH_CORNER:g} x the Nyquist frequency at "
                f"sampling_rate_hz={sampling_rate_hz:g}); {expected}"
            )
        return (float(low), None)
    if high >= nyquist:
        raise ValueError(
            f"bandpass_hz high corner {high!r} Hz is not below the Nyquist frequency "
            f"{nyquist:g} Hz (sampling_rate_hz={sampling_rate_hz:g} / 2); {expected}"
        )
    if low >= high:
        raise ValueError(
            f"bandpass_hz low corner {low!r} Hz is not below the high corner {high!r} Hz; "
            f"{expected}"
        )
    return (float(low), float(high))


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


#: The spectrogram ``(F, T)`` of the default preprocessing: the model's default input size.
DEFAULT_SPECTROGRAM_SIZE: tuple[int, int] = PreprocessConfig().spectrogram_shape[1:]  # type: ignore[assignment]
