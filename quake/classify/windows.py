"""One catalog event -> its station windows, ready for the model.

Reading (the source) and windowing (``quake.data.window_from_stream``: band choice, component
order, gap merge, resampling, TRIMMING at the P pick or origin time, and the NaN and dead checks
training applies) run here, in a reader worker when the batch job uses one, so they overlap the
model. Each station either gives its ``(3, window_samples)`` windows (one, or the
``windows_per_recording`` the model was trained with, those the checks keep) or a skip with its
reason; nothing here raises for bad data.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import obspy

from quake.data import PreprocessConfig, SkipTrace, window_from_stream
from quake.data.components import anchor_kind, select_band
from quake.data.sources import EventRequest, StationTraces, WaveformSource
from quake.probabilities import combine_groups

logger = logging.getLogger(__name__)


@dataclass
class StationResult:
    """One station of one event: used (with its window's row in the event's array) or skipped."""

    station_id: str
    used: bool
    reason: str = ""  # short category for counts, e.g. "too short"
    detail: str = ""  # longer text for the per-station table and the log
    channels: str = ""  # channel codes used, e.g. "HHZ" or "HHE,HHN,HHZ"
    sampling_rate_hz: float | None = None  # the data's own rate, before resampling
    components: str = ""  # of a used station: components backed by data, e.g. "ZNE" or "Z"
    anchor: str = ""  # of a used station: where its window starts (quake.data ANCHOR_KINDS)
    quality: str = ""  # what the quality checks found and did, readable
    flags: list[str] = field(default_factory=list)  # quality flag names, for counts


@dataclass
class PreparedEvent:
    """What a reader worker hands the model loop for one event."""

    event_id: str
    windows: np.ndarray  # (w, 3, window_samples) float32, the used stations' windows in order
    stations: list[StationResult] = field(default_factory=list)
    event_reason: str = ""  # why the event has no station at all ("no waveform folder", ...)
    read_s: float = 0.0
    preprocess_s: float = 0.0
    # (w,) the used station (0..k-1) of each window; None: one window per used station
    window_station: np.ndarray | None = None

    def station_probabilities(self, window_probs: np.ndarray) -> np.ndarray:
        """``(w, C)`` probabilities of the windows -> ``(k, C)`` of the used stations: a
        station's windows pooled by the station-to-event rule."""
        if self.window_station is None:
            return window_probs
        return combine_groups(window_probs, self.window_station, int(self.window_station.max()) + 1)

    @property
    def n_used(self) -> int:
        return sum(s.used for s in self.stations)

    @property
    def n_skipped(self) -> int:
        return sum(not s.used for s in self.stations)


def _p_time(station: StationTraces, p_picks: dict) -> obspy.UTCDateTime | None:
    if station.p_time is not None:
        return station.p_time
    if not p_picks:
        return None
    sid = station.station_id
    return p_picks.get(sid) or p_picks.get(sid.rsplit(".", 1)[0])


def _band_info(stream: obspy.Stream, config: PreprocessConfig) -> tuple[str, float | None]:
    try:
        band = select_band(stream, config)
    except Exception:
        band = stream
    channels = ",".join(sorted({tr.stats.channel for tr in band}))
    rates = [float(tr.stats.sampling_rate) for tr in band]
    return channels, (max(rates) if rates else None)


def window_station(
    station: StationTraces,
    config: PreprocessConfig,
    origin_time: obspy.UTCDateTime | None,
    p_picks: dict,
    event_id: str = "",
) -> tuple[np.ndarray | None, StationResult]:
    """Window one station -> its ``(m, 3, window_samples)`` windows (``windows_per_recording``;
    a later window that the checks refuse is left out, as training drops it) and its result;
    (None, skipped result) when the first window is unusable. Never raises."""
    channels, rate = _band_info(station.stream, config)
    result = StationResult(station.station_id, used=False, channels=channels, sampling_rate_hz=rate)
    origin = origin_time if station.use_origin else None
    p_time = _p_time(station, p_picks)
    try:
        window, quality = window_from_stream(
            station.stream, config, origin_time=origin, p_time=p_time
        )
        windows = [window] + _later_windows(station.stream, config, origin, p_time)
    except SkipTrace as skip:
        result.reason, result.detail = skip.reason, str(skip)
        logger.info("event %s, station %s skipped: %s", event_id, station.station_id, skip)
        return None, result
    except Exception as err:  # anything unexpected in one station must not stop the batch
        result.reason, result.detail = "unusable data", f"{type(err).__name__}: {err}"
        logger.warning(
            "event %s, station %s: unexpected error while windowing (%s)",
            event_id, station.station_id, err,
        )  # fmt: skip
        return None, result
    result.used = True
    result.quality = quality.describe()
    result.flags = quality.flags()
    result.components = quality.components
    result.anchor = anchor_kind(config, p_time is not None, origin is not None)
    return np.stack(windows).astype(np.float32, copy=False), result


def _later_windows(
    stream: obspy.Stream,
    config: PreprocessConfig,
    origin: obspy.UTCDateTime | None,
    p_time: obspy.UTCDateTime | None,
) -> list[np.ndarray]:
    """The windows after the first (``windows_per_recording`` > 1) that pass the checks."""
    out = []
    for k in range(1, config.windows_per_recording):
        try:
            window, _ = window_from_stream(
                stream, config, origin_time=origin, p_time=p_time, window_index=k
            )
        except SkipTrace:
            continue
        out.append(window)
    return out


def unusable_event(event_id: str, reason: str, config: PreprocessConfig) -> PreparedEvent:
    """An event the catalog gives no usable origin for: no station read, ``reason`` named."""
    empty = np.zeros((0, 3, config.window_samples), dtype=np.float32)
    return PreparedEvent(event_id, empty, event_reason=reason)


def prepare_event(
    source: WaveformSource,
    request: EventRequest,
    p_picks: dict,
    config: PreprocessConfig,
) -> PreparedEvent:
    """Fetch one event's traces and window every station (timed: reading vs preprocessing)."""
    needs_anchor = config.anchor == "p_arrival"
    if needs_anchor and request.origin_time is None and not p_picks and source.kind != "seisbench":
        return unusable_event(request.event_id, "no origin time", config)
    empty = np.zeros((0, 3, config.window_samples), dtype=np.float32)
    prepared = PreparedEvent(request.event_id, empty)
    t0 = time.perf_counter()
    try:
        traces = source.fetch(request)
    except Exception as err:  # a source bug or I/O failure costs this event, not the batch
        logger.warning("event %s: reading failed (%s)", request.event_id, err)
        prepared.event_reason = "reading failed"
        prepared.read_s = time.perf_counter() - t0
        return prepared
    t1 = time.perf_counter()
    prepared.read_s = t1 - t0
    for item, reason, detail in traces.skipped:
        if item == "event":
            prepared.event_reason = reason
        else:
            station = StationResult(item, used=False, reason=reason, detail=detail or reason)
            prepared.stations.append(station)
    windows, owners = [], []
    for station in traces.stations:
        station_windows, result = window_station(
            station, config, request.origin_time, p_picks, request.event_id
        )
        prepared.stations.append(result)
        if station_windows is not None:
            owners += [len(windows)] * len(station_windows)
            windows.append(station_windows)
    if windows:
        prepared.windows = np.concatenate(windows)
        if len(owners) > len(windows):  # some station gave several
            prepared.window_station = np.asarray(owners, dtype=np.int64)
    prepared.preprocess_s = time.perf_counter() - t1
    return prepared
