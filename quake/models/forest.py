"""The reference baseline: hand-made spectral features + a random forest (scikit-learn).

It runs on the very same folds as the deep model, so every report shows whether the deep model
earns its cost. Features are scale-free (a station's gain says nothing about the source), per
component Z, N, E:

- relative power in octave bands (``BAND_EDGES_HZ``, clipped to Nyquist) and log ratios of
  neighbouring bands -- explosions and quarry blasts are richer in high frequencies, noise is flat;
- spectral centroid and dominant frequency;
- envelope shape from the Hilbert envelope: time of the peak, rise and decay time to half the
  peak, peak-to-median ratio, energy centroid in time, kurtosis, first-half / second-half energy;
- horizontal-to-vertical energy ratio.

A missing (all-zero) component gives zero features, which the forest learns to read.

A window longer than the default one (a window that covers a surface event's minutes) is
described stretch by stretch: its ``segments`` equal stretches of about ``SEGMENT_S`` each
(:func:`feature_segments`), their features side by side, so that the forest sees how the
signal's spectrum and envelope change over the window, not only their averages.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.signal import hilbert, welch
from scipy.stats import kurtosis
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline

from quake.data.quality import COMPONENTS
from quake.probabilities import full_class_probabilities

logger = logging.getLogger(__name__)

BAND_EDGES_HZ = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
#: The length of a stretch a long window is described by (s): the default window's length.
SEGMENT_S = 20.48
_TINY = 1e-20


def feature_segments(window_s: float) -> int:
    """How many stretches of about :data:`SEGMENT_S` a window of ``window_s`` seconds is
    described by: 1 for windows shorter than 1.5 times the default."""
    return max(1, round(window_s / SEGMENT_S))


def _bands(sampling_rate_hz: float) -> list[tuple[float, float]]:
    nyquist = sampling_rate_hz / 2.0
    edges = [e for e in BAND_EDGES_HZ if e < nyquist]
    if len(edges) < 2:
        raise ValueError(
            f"sampling rate {sampling_rate_hz!r} Hz leaves fewer than two spectral bands; "
            f"expected a rate above {2 * BAND_EDGES_HZ[1]} Hz"
        )
    if nyquist > edges[-1] * 1.2:
        edges.append(nyquist)
    return list(zip(edges[:-1], edges[1:], strict=False))


def feature_names(sampling_rate_hz: float, segments: int = 1) -> list[str]:
    """The names of :func:`spectral_features`' columns; with ``segments`` > 1 each stretch's
    names start with ``s<k>_`` (k from 0, in time order)."""
    names = _window_feature_names(sampling_rate_hz)
    if segments == 1:
        return names
    return [f"s{k}_{name}" for k in range(segments) for name in names]


def _window_feature_names(sampling_rate_hz: float) -> list[str]:
    names = []
    bands = _bands(sampling_rate_hz)
    for comp in COMPONENTS:
        names += [f"{comp}_band_{lo:g}-{hi:g}Hz" for lo, hi in bands]
        names += [f"{comp}_ratio_{b}_{b + 1}" for b in range(len(bands) - 1)]
        names += [
            f"{comp}_spectral_centroid",
            f"{comp}_dominant_frequency",
            f"{comp}_env_peak_time",
            f"{comp}_env_rise_time",
            f"{comp}_env_decay_time",
            f"{comp}_env_peak_to_median",
            f"{comp}_env_time_centroid",
            f"{comp}_env_kurtosis",
            f"{comp}_energy_first_half",
        ]
    names.append("horizontal_to_vertical")
    return names


def spectral_features(
    waveforms: np.ndarray, sampling_rate_hz: float, *, segments: int = 1, chunk_size: int = 512
) -> np.ndarray:
    """``(N, 3, n)`` windows -> ``(N, n_features)`` float32, named by :func:`feature_names`:
    the features of each of ``segments`` equal stretches of the window, side by side (the
    last ``n % segments`` samples are left out).

    The windows are converted to float64 ``chunk_size`` at a time, never all at once: a
    memory-mapped set is read a chunk at a time and never copied whole."""
    waveforms = np.asarray(waveforms)  # no copy of an array (a memmap stays mapped)
    if waveforms.ndim != 3 or waveforms.shape[1] != 3:
        raise ValueError(f"waveforms must have shape (N, 3, samples), got {waveforms.shape}")
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise ValueError(f"segments must be an integer >= 1, got {segments!r}")
    stretch = waveforms.shape[2] // segments
    if segments > 1 and stretch < 16:
        raise ValueError(
            f"{segments} segments of a {waveforms.shape[2]}-sample window leave {stretch} "
            "samples each; expected at least 16"
        )
    parts = [
        np.concatenate(
            [
                _features_chunk(
                    np.asarray(
                        waveforms[i : i + chunk_size, :, k * stretch : (k + 1) * stretch],
                        dtype=np.float64,
                    ),
                    sampling_rate_hz,
                )
                for k in range(segments)
            ],
            axis=1,
        )
        for i in range(0, len(waveforms), chunk_size)
    ]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), np.float32)


def _features_chunk(x: np.ndarray, fs: float) -> np.ndarray:
    n_items, _, n = x.shape
    x = x - x.mean(axis=2, keepdims=True)
    duration = n / fs
    nperseg = min(n, int(2 ** np.floor(np.log2(max(16.0, fs * 2.56)))))
    freqs, psd = welch(x, fs=fs, nperseg=nperseg, axis=2)  # (N, 3, F)
    total = psd.sum(axis=2, keepdims=True) + _TINY
    live = (np.abs(x).max(axis=2) > 0).astype(np.float64)  # (N, 3) 1 where the component exists
    cols = []
    bands = _bands(fs)
    band_power = (
        np.stack([psd[:, :, (freqs >= lo) & (freqs < hi)].sum(axis=2) for lo, hi in bands], axis=2)
        / total
    )  # (N, 3, B)
    log_band = np.log10(band_power + 1e-8)
    ratios = log_band[:, :, :-1] - log_band[:, :, 1:]
    centroid = (psd * freqs).sum(axis=2) / total[:, :, 0]
    dominant = freqs[psd.argmax(axis=2)]

    envelope = np.abs(hilbert(x, axis=2))
    kernel = max(1, int(fs * 0.5))
    cumulative = np.cumsum(envelope, axis=2)
    smooth = (cumulative[:, :, kernel:] - cumulative[:, :, :-kernel]) / kernel
    peak_idx = smooth.argmax(axis=2)
    peak = np.take_along_axis(smooth, peak_idx[:, :, None], axis=2)[:, :, 0] + _TINY
    t = np.arange(smooth.shape[2])
    above = smooth >= 0.5 * peak[:, :, None]
    first_above = above.argmax(axis=2)
    last_above = smooth.shape[2] - 1 - above[:, :, ::-1].argmax(axis=2)
    rise = (peak_idx - first_above) / fs
    decay = (last_above - peak_idx) / fs
    peak_to_median = np.log10(peak / (np.median(smooth, axis=2) + _TINY))
    energy = envelope**2
    energy_total = energy.sum(axis=2) + _TINY
    time_centroid = (energy * np.arange(n)).sum(axis=2) / energy_total / n
    with warnings.catch_warnings():  # all-zero (missing) components: kurtosis is undefined
        warnings.simplefilter("ignore", RuntimeWarning)
        env_kurt = np.nan_to_num(kurtosis(envelope, axis=2))
    first_half = energy[:, :, : n // 2].sum(axis=2) / energy_total
    horizontal = energy_total[:, 1:].sum(axis=1)
    h_to_v = np.log10((horizontal + _TINY) / (energy_total[:, 0] + _TINY))
    h_to_v = np.where(live[:, 1:].any(axis=1) & (live[:, 0] > 0), h_to_v, 0.0)

    for c in range(3):
        block = np.column_stack(
            [
                log_band[:, c],
                ratios[:, c],
                centroid[:, c],
                dominant[:, c],
                (t[peak_idx[:, c]] / fs) / duration,
                rise[:, c],
                decay[:, c],
                peak_to_median[:, c],
                time_centroid[:, c],
                env_kurt[:, c],
                first_half[:, c],
            ]
        )
        cols.append(block * live[:, c : c + 1])
    cols.append(h_to_v[:, None])
    return np.nan_to_num(np.concatenate(cols, axis=1), nan=0.0, posinf=0.0, neginf=0.0)


class SpectralFeatures(TransformerMixin, BaseEstimator):
    """:func:`spectral_features` as a scikit-learn transformer, so that the baseline is one
    estimator (:func:`baseline_pipeline`) that ``clone``, ``get_params`` and converters know.

    ``transform`` takes ``(N, 3, n)`` Z, N, E windows; nothing is learnt, so ``fit`` only
    checks the rate."""

    def __init__(self, sampling_rate_hz: float, segments: int = 1):
        self.sampling_rate_hz = sampling_rate_hz
        self.segments = segments

    def fit(self, waveforms: np.ndarray, labels: Sequence[int] | None = None) -> SpectralFeatures:
        _bands(self.sampling_rate_hz)  # a rate with too few bands is refused here, by name
        return self

    def transform(self, waveforms: np.ndarray) -> np.ndarray:
        return spectral_features(waveforms, self.sampling_rate_hz, segments=self.segments)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.asarray(feature_names(self.sampling_rate_hz, self.segments), dtype=object)


def forest_estimator(
    n_estimators: int = 300,
    max_depth: int | None = None,
    min_samples_leaf: int = 1,
    seed: int = 0,
    n_jobs: int | None = None,
) -> RandomForestClassifier:
    """The baseline's forest, unfitted: class imbalance by balanced class weights. Training and
    :func:`baseline_pipeline` both build it here, so they cannot differ."""
    return RandomForestClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        class_weight="balanced",
        random_state=seed,
        n_jobs=n_jobs,
    )


def baseline_pipeline(
    sampling_rate_hz: float,
    n_estimators: int = 300,
    max_depth: int | None = None,
    min_samples_leaf: int = 1,
    seed: int = 0,
    n_jobs: int | None = None,
    segments: int = 1,
) -> Pipeline:
    """The baseline as one scikit-learn estimator: windows ``(N, 3, n)`` -> spectral features
    (of ``segments`` stretches, :func:`feature_segments`) -> random forest. Training computes
    the features once per run instead (the folds share them) and fits
    :func:`forest_estimator`, this pipeline's last step."""
    return Pipeline(
        [
            ("features", SpectralFeatures(sampling_rate_hz, segments)),
            ("forest", forest_estimator(n_estimators, max_depth, min_samples_leaf, seed, n_jobs)),
        ]
    )


class SpectralForestBaseline:
    """Random forest on :func:`spectral_features` (:func:`forest_estimator`), fitted on
    features computed beforehand."""

    def __init__(
        self,
        n_estimators: int = 300,
        max_depth: int | None = None,
        min_samples_leaf: int = 1,
        seed: int = 0,
        n_jobs: int | None = None,
    ):
        self.forest = forest_estimator(n_estimators, max_depth, min_samples_leaf, seed, n_jobs)

    def fit(self, features: np.ndarray, labels: Sequence[int]) -> SpectralForestBaseline:
        self.forest.fit(features, np.asarray(labels))
        return self

    def predict_proba(self, features: np.ndarray, n_classes: int) -> np.ndarray:
        """Probabilities for all ``n_classes`` (a class missing from training gets 0)."""
        return full_class_probabilities(
            self.forest.predict_proba(features), self.forest.classes_, n_classes
        )

    def __str__(self) -> str:
        p = self.forest.get_params()
        return (
            f"RandomForestClassifier(n_estimators={p['n_estimators']}, max_depth={p['max_depth']}, "
            f"min_samples_leaf={p['min_samples_leaf']}, class_weight='balanced') on spectral features"
        )
