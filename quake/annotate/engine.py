"""Continuous recordings -> class probabilities every ``stride`` seconds, per station.

A station's traces are read once by the reading layer
(:func:`~quake.data.components.stream_to_array_info`: band choice, Z/N/E by the last letter of
the channel code, gap merge, spike and clipping checks, resampling to the model's rate), and
windows of the model's own length start every ``stride`` seconds from the first sample (or from
``start``). Each window is judged by the same rules as a window of an event
(:func:`~quake.data.transforms.window_from_array`): one without enough recorded data (a gap, the
edge of the recording), with NaN samples, clipped or dead is **skipped and counted** with its
reason, never filled silently; its probabilities are NaN.

Windows that touch nothing the reading found (no gap, overlap, spike, clip, dropout or NaN, all
components recorded) need no second look but the dead-channel check, and take their
spectrograms from one STFT of the recording (:mod:`quake.annotate.spectrogram`); the others go
through ``window_from_array`` one by one. Batches of windows go to the model under bf16
autocast where the CPU (or GPU) computes bf16 natively (``precision="auto"``; ``"fp32"`` and
``"bf16"`` force either; :func:`quake.runtime.inference_amp`).

Output convention (SeisBench's ``WaveformModel.annotate``): one trace per class, the class in
the channel code (``quake_earthquake``, spaces as ``_``), sampled at ``1 / stride``; sample
``k`` is the window starting ``k * stride`` after the first window, and it is stamped at that
window's **centre** (starttime = first window start + ``window_s / 2``).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import obspy
import torch

from quake.annotate.propose import Proposal, needs_proposals, trigger_spans
from quake.annotate.spectrogram import RecordingSpectrogram, shared_stft_applies
from quake.data.components import station_key, stream_to_array_info
from quake.data.config import PreprocessConfig, TransformOP
from quake.data.quality import COMPONENTS, SkipTrace, StreamArray, apply_policy
from quake.data.transforms import flat_channels, spectrogram_batch, window_from_array
from quake.runtime import autocast_for, inference_amp

logger = logging.getLogger(__name__)

#: Prefix of the probability traces' channel codes: ``quake_<class>``.
CHANNEL_PREFIX = "quake"
#: Default stride, in STFT hops of the model's config (8 hops: 5.12 s at the default 100 Hz,
#: hop 64, a quarter of the default window): every moment is seen by four windows, and a
#: station-day is 16,875 windows.
DEFAULT_STRIDE_HOPS = 8


def default_stride_s(config: PreprocessConfig) -> float:
    """The default stride: :data:`DEFAULT_STRIDE_HOPS` STFT hops, in seconds."""
    return DEFAULT_STRIDE_HOPS * config.stft_hop / config.sampling_rate_hz


def stride_samples(config: PreprocessConfig, stride_s: float | None) -> int:
    """``stride_s`` (default :func:`default_stride_s`) in samples of the model's rate; a
    ValueError names a stride that is not positive or shorter than one sample."""
    stride_s = default_stride_s(config) if stride_s is None else stride_s
    if isinstance(stride_s, bool) or not isinstance(stride_s, (int, float)):
        raise ValueError(f"stride must be a number of seconds, got {stride_s!r}")
    samples = int(round(stride_s * config.sampling_rate_hz))
    if not math.isfinite(stride_s) or samples < 1:
        raise ValueError(
            f"stride {stride_s!r} s is not at least one sample ({1 / config.sampling_rate_hz:g} s "
            f"at the model's {config.sampling_rate_hz:g} Hz); expected a positive number"
        )
    return samples


def channel_code(class_name: str, prefix: str = CHANNEL_PREFIX) -> str:
    """``"quarry blast"`` -> ``"quake_quarry_blast"``: the channel of a probability trace."""
    return f"{prefix}_{class_name.replace(' ', '_')}"


@dataclass
class StationAnnotation:
    """One station's windows: where they start, their probabilities (NaN rows: skipped), the
    reason of each skip (``""``: used) and the quality flags of each window used."""

    station: str  # NET.STA.LOC
    class_names: list[str]
    first_start: obspy.UTCDateTime | None  # first sample of the first window
    stride_s: float
    window_s: float
    probabilities: np.ndarray  # (K, C)
    skipped: list[str] = field(default_factory=list)  # per window: "" or the reason
    flags: list[tuple[str, ...]] = field(default_factory=list)  # per window
    station_skip: str = ""  # why no window could be cut at all
    #: STA/LTA triggers and their windows' probabilities (a model without a noise class)
    proposals: list[Proposal] | None = None
    sampling_rate_hz: float = 0.0  # of the reading the proposals' samples count
    pre_arrival_s: float = 0.0  # where in a window training puts the P arrival

    @property
    def n_windows(self) -> int:
        return len(self.probabilities)

    def skip_counts(self) -> dict[str, int]:
        """``{reason: windows}`` of the skipped windows (and ``station: <reason>`` when the
        station gave none)."""
        counts = Counter(r for r in self.skipped if r)
        if self.station_skip:
            counts[f"station: {self.station_skip}"] += 1
        return dict(sorted(counts.items()))

    def window_start(self, k: int | np.ndarray) -> obspy.UTCDateTime:
        return self.first_start + np.asarray(k) * self.stride_s

    def traces(self, prefix: str = CHANNEL_PREFIX) -> list[obspy.Trace]:
        """One float32 trace per class (module docstring); NaN where a window was skipped."""
        if self.first_start is None or not self.n_windows:
            return []
        net, sta, loc = self.station.split(".")
        header = {
            "network": net,
            "station": sta,
            "location": loc,
            "sampling_rate": 1.0 / self.stride_s,
            "starttime": self.first_start + self.window_s / 2,
        }
        return [
            obspy.Trace(
                self.probabilities[:, c].astype(np.float32),
                {**header, "channel": channel_code(name, prefix)},
            )
            for c, name in enumerate(self.class_names)
        ]


# ---------------------------------------------------------------------------------- quality
def eventful_windows(reading: StreamArray, starts: np.ndarray, size: int) -> np.ndarray:
    """Per window: whether it touches anything the reading found (a gap, overlap, spike, clip,
    dropout, NaN sample, or a sample not recorded on a component present)."""
    n = reading.data.shape[1]
    sr = reading.sampling_rate_hz
    rows = [COMPONENTS.index(c) for c in reading.channels] or [0, 1, 2]
    marks = np.zeros(n, dtype=bool)
    if reading.backed is not None:
        marks |= ~reading.backed[rows].all(axis=0)
    marks |= ~np.isfinite(reading.data[rows]).all(axis=0)
    record = reading.quality
    spans = [(t, length) for _, t, length in record.gaps + record.clipped + record.dropouts]
    spans += [(t, length) for _, t, length, _ in record.overlaps]
    spans += [(t, 0.0) for _, t in record.spikes]
    for t, length in spans:
        a = max(int(math.floor(t * sr)), 0)
        marks[a : max(int(math.ceil((t + length) * sr)), a + 1)] = True
    total = np.concatenate(([0], np.cumsum(marks)))
    return total[starts + size] - total[starts] > 0


def plain_record(reading: StreamArray):
    """The quality record of a window that touches nothing the reading found: the reading's,
    less everything placed in time."""
    record = reading.quality.copy()
    for name in ("gaps", "overlaps", "spikes", "clipped", "dropouts"):
        setattr(record, name, [])
    record.non_finite, record.coverage, record.padded_s = 0, 1.0, 0.0
    return record


def could_overflow(data: np.ndarray, size: int) -> bool:
    """Whether any window of ``data`` might overflow float32 in the z-score (then every window
    is checked one by one, :func:`~quake.data.transforms.overflow_description`)."""
    finite = data[np.isfinite(data)]
    peak = float(np.abs(finite).max()) if finite.size else 0.0
    return peak * peak * size >= 1e30 or peak * size >= 1e30


def check_window(
    reading: StreamArray, start: int, config: PreprocessConfig
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The window of ``reading`` from sample ``start``, judged by
    :func:`~quake.data.transforms.window_from_array` (SkipTrace when it is not used): the
    window (a truncated component filled by the policy) and its quality flags."""
    size, sr = config.window_samples, config.sampling_rate_hz
    data = reading.data[:, start : start + size]
    record = reading.quality.shifted(start / sr, config.window_s)
    rows = [COMPONENTS.index(c) for c in reading.channels]
    record.non_finite = int(np.count_nonzero(~np.isfinite(data[rows])))
    backed = None if reading.backed is None else reading.backed[:, start : start + size].copy()
    piece = StreamArray(
        data=data, starttime=reading.starttime + start / sr, sampling_rate_hz=sr,
        channels=reading.channels, station=reading.station, quality=record, backed=backed,
    )  # fmt: skip
    steps = (config.transforms | TransformOP.DROP_NAN) & ~TransformOP.TRIMMING
    window, quality = window_from_array(data, config, transforms=steps, reading=piece)
    return window, tuple(quality.flags())


# ---------------------------------------------------------------------------------- engine
@dataclass
class _Batch:
    """The windows of one model batch that are used: their indices, samples and (where cut
    from the recording's STFT) spectrograms."""

    index: list[int] = field(default_factory=list)
    windows: list[np.ndarray] = field(default_factory=list)
    shared: list[bool] = field(default_factory=list)


class _StationRun:
    """The windows of one station's reading, judged and scored batch by batch."""

    def __init__(self, classifier, reading: StreamArray, starts: np.ndarray, options: dict):
        self.classifier = classifier
        self.config = config = classifier.config
        self.reading = reading
        self.starts = starts
        self.options = options
        size = config.window_samples
        self.eventful = eventful_windows(reading, starts, size)
        if could_overflow(reading.data, size):
            self.eventful[:] = True
        base = plain_record(reading)
        self.base_flags = tuple(base.flags())
        try:
            apply_policy(base, config.quality)
            self.base_skip = ""
        except SkipTrace as skip:
            self.base_skip = skip.reason  # e.g. a missing component under a "skip" policy
        stride = int(starts[1] - starts[0]) if len(starts) > 1 else config.stft_hop
        self.shared = None
        if (
            options.get("shared_stft", True)
            and classifier.uses_spectrograms
            and shared_stft_applies(config, stride)
            and int(starts[0]) % config.stft_hop == 0
        ):
            self.shared = RecordingSpectrogram(reading.data, config)
        n_classes = len(classifier.class_names)
        self.probabilities = np.full((len(starts), n_classes), np.nan)
        self.skipped = [""] * len(starts)
        self.flags: list[tuple[str, ...]] = [()] * len(starts)

    def run(self) -> None:
        batch_size = self.options.get("batch_size", 128)
        for lo in range(0, len(self.starts), batch_size):
            self._score(self._judge(range(lo, min(lo + batch_size, len(self.starts)))))

    def _judge(self, indices: range) -> _Batch:
        """Each window of ``indices`` used (into the batch) or skipped (its reason noted)."""
        batch = _Batch()
        size = self.config.window_samples
        for k in indices:
            start = int(self.starts[k])
            if self.base_skip:
                self.skipped[k] = self.base_skip
                continue
            if self.eventful[k]:
                try:
                    window, flags = check_window(self.reading, start, self.config)
                except SkipTrace as skip:
                    self.skipped[k] = skip.reason
                    continue
                shared = False
            else:
                window = self.reading.data[:, start : start + size]
                flat = flat_channels(window)
                if flat.all():
                    self.skipped[k] = "dead"
                    continue
                flags = self.base_flags + (("dead channel",) if flat.any() else ())
                shared = self.shared is not None
            self.flags[k] = flags
            batch.index.append(k)
            batch.windows.append(window)
            batch.shared.append(shared)
        return batch

    def _score(self, batch: _Batch) -> None:
        if not batch.index:
            return
        classifier = self.classifier
        windows = np.stack(batch.windows).astype(np.float32, copy=False)
        with torch.inference_mode(), autocast_for(classifier.device, self.options.get("amp")):
            if not classifier.uses_spectrograms or not any(batch.shared):
                probs = classifier.predict_proba(windows, batch_size=len(windows))
            else:
                specs = self._spectrograms(windows, batch)
                probs = classifier.predict_proba_with(windows, specs, batch_size=len(windows))
        self.probabilities[batch.index] = probs

    def _spectrograms(self, windows: np.ndarray, batch: _Batch) -> torch.Tensor:
        """The batch's spectrograms: cut from the recording's STFT where the window is the
        recording's own samples, else computed from the window (``spectrogram_batch``)."""
        x = torch.from_numpy(windows)
        shared = np.asarray(batch.shared)
        specs = torch.empty((len(windows), *self.config.spectrogram_shape), dtype=torch.float32)
        if shared.any():
            starts = self.starts[np.asarray(batch.index)[shared]]
            specs[torch.from_numpy(shared)] = self.shared.spectrograms(x[shared], starts)
        if not shared.all():
            own = torch.from_numpy(~shared)
            specs[own] = spectrogram_batch(x[own], self.config)
        return specs


def classify_proposals(classifier, reading: StreamArray, options: dict) -> list[Proposal]:
    """Each STA/LTA trigger of ``reading`` with the probabilities of the window that starts
    ``pre_arrival_s`` before it (judged by :func:`check_window`; a skip keeps its reason)."""
    config = classifier.config
    size = config.window_samples
    before = int(round(config.pre_arrival_s * config.sampling_rate_hz))
    proposals, windows, used = [], [], []
    for on, off in trigger_spans(reading):
        proposal = Proposal(on, off)
        proposals.append(proposal)
        start = on - before
        if start < 0 or start + size > reading.data.shape[1]:
            proposal.skip = "too short"
            continue
        try:
            window, proposal.flags = check_window(reading, start, config)
        except SkipTrace as skip:
            proposal.skip = skip.reason
            continue
        windows.append(window)
        used.append(proposal)
    batch_size = options.get("batch_size", 128)
    for lo in range(0, len(windows), batch_size):
        chunk = np.stack(windows[lo : lo + batch_size]).astype(np.float32, copy=False)
        with torch.inference_mode(), autocast_for(classifier.device, options.get("amp")):
            probs = classifier.predict_proba(chunk, batch_size=len(chunk))
        for proposal, p in zip(used[lo : lo + batch_size], probs, strict=True):
            proposal.probabilities = p
    return proposals


def annotate_station(
    classifier,
    stream: obspy.Stream,
    *,
    stride_s: float | None = None,
    start: obspy.UTCDateTime | None = None,
    end: obspy.UTCDateTime | None = None,
    batch_size: int = 128,
    precision: str = "auto",
    shared_stft: bool = True,
    propose: bool | None = None,
) -> StationAnnotation:
    """One station's continuous ``stream`` -> its :class:`StationAnnotation` (module docstring).

    Windows start every ``stride_s`` (default :func:`default_stride_s`) from ``start`` (default:
    the first sample) and end by ``end`` (default: the last sample). ``shared_stft=False`` takes
    every spectrogram from its own window (the per-window path, for comparison). ``propose``
    (default: when the model has no ``noise`` class) also classifies the window of each STA/LTA
    trigger (:mod:`quake.annotate.propose`). ``precision``: ``auto`` (bf16 autocast where the
    device computes bf16 natively), ``bf16`` or ``fp32``."""
    config = classifier.config
    step = stride_samples(config, stride_s)
    amp = inference_amp(precision, classifier.device)
    class_names = list(classifier.class_names)
    station = station_key(stream[0].stats) if len(stream) else "..."
    result = StationAnnotation(
        station, class_names, None, step / config.sampling_rate_hz, config.window_s,
        np.zeros((0, len(class_names))), pre_arrival_s=config.pre_arrival_s,
    )  # fmt: skip
    try:
        reading = stream_to_array_info(stream, config, start=start, end=end)
    except SkipTrace as skip:
        result.station_skip = skip.reason
        logger.info("%s: no window annotated: %s", station, skip)
        return result
    size = config.window_samples
    starts = np.arange(0, reading.data.shape[1] - size + 1, step, dtype=np.int64)
    if not len(starts):
        result.station_skip = "too short"
        return result
    options = {"batch_size": batch_size, "amp": amp, "shared_stft": shared_stft}
    run = _StationRun(classifier, reading, starts, options)
    run.run()
    if propose if propose is not None else needs_proposals(class_names):
        result.proposals = classify_proposals(classifier, reading, options)
    result.first_start = reading.starttime
    result.sampling_rate_hz = reading.sampling_rate_hz
    result.probabilities, result.skipped, result.flags = run.probabilities, run.skipped, run.flags
    skipped = result.skip_counts()
    if skipped:
        logger.info("%s: %d of %d windows skipped %s", station, sum(skipped.values()),
                    len(starts), skipped)  # fmt: skip
    return result


def split_stations(stream: obspy.Stream) -> dict[str, obspy.Stream]:
    """``{NET.STA.LOC: its traces}``, sorted by station."""
    stations: dict[str, obspy.Stream] = {}
    for tr in stream:
        stations.setdefault(station_key(tr.stats), obspy.Stream()).append(tr)
    return dict(sorted(stations.items()))


def annotate_stream(
    classifier, stream: obspy.Stream, **options
) -> tuple[obspy.Stream, list[StationAnnotation]]:
    """Every station of ``stream`` -> the probability Stream (module docstring) and each
    station's :class:`StationAnnotation`. ``options``: those of :func:`annotate_station`."""
    if not isinstance(stream, obspy.Stream):
        raise ValueError(f"expected an obspy Stream of continuous traces, got {type(stream)}")
    stations = [annotate_station(classifier, traces, **options)
                for traces in split_stations(stream).values()]  # fmt: skip
    out = obspy.Stream([tr for station in stations for tr in station.traces()])
    return out, stations
