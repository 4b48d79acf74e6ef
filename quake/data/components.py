"""obspy Stream of one station -> ``(3, n)`` float32 array in Z, N, E order.

Used by the catalog reader, the adapter (lists of Streams) and batch classification of
continuous archives, so every path maps components, merges gaps and resamples the same way.

- The component is the last letter of the channel code: ``Z``/``N``/``E``; ``1``/``2`` are
  taken as N/E with a warning (orientation is not checked). A channel with any other letter is
  ignored and named in the quality record; only a station with no other channel is skipped.
- A station may have several channel bands (``BHZ`` 40 Hz, ``LHZ`` 1 Hz, ``VHZ`` 0.1 Hz): the
  band with the highest sampling rate >= ``min_sampling_rate_hz`` is used; the others are
  ignored (logged at debug level). No band fast enough: ``SkipTrace("low sampling rate")``.
- Segments of one channel at different sampling rates: the rate whose segments cover most of
  the window (or of the requested span, without one) is kept, a tie going to the higher rate;
  the other segments are dropped and named in the quality record.
- Gaps within a component are merged with ``config.gap_fill``: ``"interpolate"`` (straight
  line between the samples around the gap) or ``"zeros"``; overlaps keep the first trace's data.
  Both are recorded in the quality record, and gap samples do not count as recorded.
- Each component is inspected for spikes, clipping and non-finite samples at its own rate and
  repaired as ``config.quality`` says (:mod:`quake.data.quality`), then resampled to
  ``config.sampling_rate_hz`` (polyphase, anti-aliased).
- Components are aligned on a common time grid starting at the earliest start; a component
  that starts later or ends earlier is zero-filled there.
- A missing horizontal follows ``config.missing_component``: ``"zeros"`` or ``"copy_z"``;
  a missing vertical is zeros (logged). No usable component at all: ``SkipTrace``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from obspy import Stream, Trace, UTCDateTime

from quake.data.config import PreprocessConfig, TransformOP
from quake.data.quality import (
    COMPONENTS,
    QualityRecord,
    StreamArray,
    check_channel,
    fill_description,
)
from quake.data.transforms import (
    SkipTrace,
    mark_unrecorded,
    resample_waveform,
    window_from_array,
)

logger = logging.getLogger(__name__)

_ALIASES = {"Z": "Z", "N": "N", "E": "E", "1": "N", "2": "E"}


def component_of(channel: str) -> str:
    """``"HHZ"`` -> ``"Z"``; ``"HH1"``/``"HH2"`` -> ``"N"``/``"E"`` with a warning.

    Raises ``SkipTrace("unknown channel")`` naming the code for anything else.
    """
    code = str(channel or "").strip().upper()
    letter = code[-1:] if code else ""
    if letter not in _ALIASES:
        raise SkipTrace(
            "unknown channel",
            f"channel code {channel!r}: expected its last letter to be Z, N, E, 1 or 2",
        )
    if letter in "12":
        logger.warning(
            "channel %s: component %s taken as %s (orientation not checked)",
            code,
            letter,
            _ALIASES[letter],
        )
    return _ALIASES[letter]


def listed_components(text: object) -> set[str] | None:
    """Components named by a ``trace_components`` value (``"ZNE"``, ``"Z"``, ``"Z12"``), or None."""
    if not isinstance(text, str) or not text.strip():
        return None
    return {_ALIASES[c] for c in text.strip().upper() if c in _ALIASES}


def station_key(stats) -> str:
    """``NET.STA.LOC`` of a trace's stats: one sample per station and event."""
    return f"{stats.network}.{stats.station}.{stats.location}"


def select_band(stream: Stream, config: PreprocessConfig) -> Stream:
    """Keep the traces of the band (channel code minus its last letter) with the highest
    sampling rate >= ``config.min_sampling_rate_hz``; SkipTrace when there is none."""
    if len(stream) == 0:
        raise SkipTrace("empty", "stream holds no trace")
    rates: dict[str, float] = {}
    for tr in stream:
        band = tr.stats.channel[:-1]
        rates[band] = max(rates.get(band, 0.0), float(tr.stats.sampling_rate))
    usable = {b: r for b, r in rates.items() if r >= config.min_sampling_rate_hz}
    if not usable:
        found = ", ".join(f"{b}?={r:g} Hz" for b, r in sorted(rates.items()))
        raise SkipTrace(
            "low sampling rate",
            f"no channel at >= {config.min_sampling_rate_hz:g} Hz (found {found})",
        )
    best = max(usable, key=lambda b: (usable[b], b))
    rejected = sorted(b for b in rates if b != best)
    if rejected:
        logger.debug("using band %s?; ignoring %s", best, ", ".join(f"{b}?" for b in rejected))
    return Stream([tr for tr in stream if tr.stats.channel[:-1] == best])


def stream_to_array_info(
    stream: Stream,
    config: PreprocessConfig,
    *,
    start: UTCDateTime | None = None,
    end: UTCDateTime | None = None,
    window: tuple[UTCDateTime, UTCDateTime] | None = None,
) -> StreamArray:
    """Like :func:`stream_to_array`, also returning the start time, the channels used and the
    quality record of the reading (gaps, overlaps, spikes, clipping, non-finite samples,
    resampling, missing components; spikes repaired as ``config.quality`` says, before
    resampling) with the mask of recorded samples. ``window``: the span that will be cut, where
    spikes and clipping are looked for (default: everywhere)."""
    if not isinstance(stream, Stream):
        raise ValueError(f"expected an obspy Stream, got {type(stream).__name__}")
    stations = sorted({station_key(tr.stats) for tr in stream})
    if len(stations) > 1:
        raise SkipTrace("several stations", f"one stream must hold one station, got {stations}")
    stream = select_band(stream, config)
    record = QualityRecord()
    by_component: dict[str, Stream] = {}
    ignored: list[str] = []
    for tr in stream:
        try:
            comp = component_of(tr.stats.channel)
        except SkipTrace:
            ignored.append(tr.stats.channel)
            continue
        by_component.setdefault(comp, Stream()).append(tr)
    if ignored:
        record.ignored_channels = sorted(set(ignored))
        logger.info(
            "%s: ignored channel(s) %s (last letter not Z, N, E, 1 or 2)",
            stations[0],
            ", ".join(record.ignored_channels),
        )
    if not by_component:
        raise SkipTrace(
            "unknown channel",
            f"channel codes {sorted(set(ignored))}: expected the last letter to be Z, N, E, 1 or 2",
        )

    sr = float(config.sampling_rate_hz)
    span = window or _requested_span(by_component, start, end)
    for comp, traces in by_component.items():
        channels = sorted({tr.stats.channel for tr in traces})
        if len(channels) > 1:  # e.g. both HHN and HH1: prefer the letter that names the axis
            preferred = [c for c in channels if c.endswith(comp)] or channels[:1]
            traces = Stream([tr for tr in traces if tr.stats.channel == preferred[0]])
        by_component[comp], dropped = _one_rate(traces, span)
        _note_dropped(record, comp, dropped, stations[0])
    t0 = (
        start
        if start is not None
        else min(tr.stats.starttime for traces in by_component.values() for tr in traces)
    )
    span_s = None if window is None else (float(window[0] - t0), float(window[1] - t0))
    pieces: dict[str, tuple[UTCDateTime, np.ndarray, str, float]] = {}
    for comp, traces in by_component.items():
        gaps, overlaps = gaps_and_overlaps(traces)
        merged = _merge(traces, config.gap_fill)
        rate = float(merged.stats.sampling_rate)
        offset_s = float(merged.stats.starttime - t0)
        # inspected and repaired at the channel's own rate: resampling would smear a glitch
        data = check_channel(
            merged.data, comp, rate, config.quality, record, t0_s=offset_s, span_s=span_s
        )
        if not math.isclose(rate, sr, rel_tol=1e-9):
            record.resampled_from_hz = max(record.resampled_from_hz or 0.0, rate)
        data = resample_waveform(data, rate, sr)
        pieces[comp] = (merged.stats.starttime, data, merged.stats.channel, rate)
        for gap_start, length in gaps:
            record.gaps.append((comp, float(gap_start - t0), length))
        for ov_start, length, conflicting in overlaps:
            record.overlaps.append((comp, float(ov_start - t0), length, conflicting))
    # a gap zero-filled by the merge is a gap, not also a dropout
    record.dropouts = [
        (c, t, length)
        for c, t, length in record.dropouts
        if not any(g == c and t < g0 + gn and g0 < t + length for g, g0, gn in record.gaps)
    ]

    if end is not None:
        n = int(round((end - t0) * sr))
    else:
        n = max(int(round((p[0] - t0) * sr)) + p[1].shape[0] for p in pieces.values())
    if n <= 0:
        raise SkipTrace("empty", f"requested span from {t0} to {end} holds no sample")
    out = np.zeros((3, n), dtype=np.float32)
    backed = np.zeros((3, n), dtype=bool)
    for comp, (tstart, data, _, _) in pieces.items():
        row = COMPONENTS.index(comp)
        offset = int(round((tstart - t0) * sr))
        lo, hi = max(offset, 0), min(offset + data.shape[0], n)
        if hi > lo:
            out[row, lo:hi] = data[lo - offset : hi - offset]
            backed[row, lo:hi] = True
    mark_unrecorded(backed, record.gaps + record.dropouts, sr)
    if record.gaps:
        record.actions["gap"] = (
            "interpolated" if config.gap_fill == "interpolate" else "zero-filled"
        )

    info = StreamArray(
        data=out,
        starttime=t0,
        sampling_rate_hz=sr,
        channels={c: p[2] for c, p in pieces.items()},
        original_sampling_rate_hz=max(p[3] for p in pieces.values()),
        station=stations[0],
        quality=record,
        backed=backed,
    )
    record.components = "".join(c for c in COMPONENTS if c in info.channels)
    for comp in info.missing:
        record.missing[comp] = "absent"
    _fill_missing(out, info, config)
    return info


def stream_to_array(
    stream: Stream,
    config: PreprocessConfig,
    *,
    start: UTCDateTime | None = None,
    end: UTCDateTime | None = None,
) -> np.ndarray:
    """obspy Stream of ONE station -> ``(3, n)`` float32, Z, N, E at ``config.sampling_rate_hz``.

    ``start``/``end`` cut (and zero-pad) to that span; by default the array spans all traces.
    Raises :class:`SkipTrace` for unusable input (unknown channel code, several stations,
    no channel at or above ``min_sampling_rate_hz``, empty stream).
    """
    return stream_to_array_info(stream, config, start=start, end=end).data


#: Where a window starts from: ``pre_arrival_s`` before the station's P pick, or before the
#: event's origin time (``anchor="p_arrival"``), or at the first recorded sample (no pick and
#: no origin time, or ``anchor="start"``/``"offset"``). Named in the model card's comparison.
ANCHOR_KINDS = ("p_pick", "origin_time", "trace_start")


def anchor_kind(config: PreprocessConfig, p_known: bool, origin_known: bool) -> str:
    """Which of :data:`ANCHOR_KINDS` a window cut under ``config`` starts from, given whether
    a P pick and an origin time are known for it (the rule of :func:`window_from_stream` and
    of :func:`~quake.data.adapter.anchor_sample_from_metadata`)."""
    if config.anchor != "p_arrival":
        return "trace_start"
    if p_known:
        return "p_pick"
    return "origin_time" if origin_known else "trace_start"


def window_from_stream(
    stream: Stream,
    config: PreprocessConfig,
    *,
    origin_time: UTCDateTime | None = None,
    p_time: UTCDateTime | None = None,
    window_index: int = 0,
) -> tuple[np.ndarray, QualityRecord]:
    """Stream of one station -> ``(window, quality)``: the model's ``(3, window_samples)`` window,
    cut as training cuts it, and its :class:`~quake.data.quality.QualityRecord`.

    The anchor is the P arrival when given, else the origin time (``anchor="p_arrival"``; the
    window starts ``pre_arrival_s`` earlier); ``"start"``/``"offset"`` count from the first
    sample. The window is cut and checked by :func:`~quake.data.transforms.window_from_array`,
    as the adapter does for training, under ``config.quality``. DROP_NAN and TRIMMING always
    apply here, whatever ``config.transforms`` says: a stream is never cut to length beforehand,
    and a NaN must never reach a model. ``window_index`` k > 0: the k-th window after that one
    (``windows_per_recording``).
    """
    anchor_time = p_time if p_time is not None else origin_time
    window = None
    if anchor_time is not None and config.anchor == "p_arrival":
        begin = UTCDateTime(anchor_time) - config.pre_arrival_s + window_index * config.window_s
        window = (begin, begin + config.window_s)
    arr = stream_to_array_info(stream, config, window=window)
    anchor_sample = None
    if anchor_time is not None:
        anchor_sample = (UTCDateTime(anchor_time) - arr.starttime) * arr.sampling_rate_hz
    return window_from_array(
        arr.data,
        config,
        anchor_sample=anchor_sample,
        transforms=config.transforms | TransformOP.DROP_NAN | TransformOP.TRIMMING,
        reading=arr,
        window_index=window_index,
    )


def gaps_and_overlaps(
    traces: Stream,
) -> tuple[list[tuple[UTCDateTime, float]], list[tuple[UTCDateTime, float, bool]]]:
    """Gaps ``(start, length_s)`` and overlaps ``(start, length_s, conflicting)`` between the
    segments of one channel. An overlap is conflicting when the two segments disagree on a
    sample they both hold (merging then keeps the first segment's)."""
    if len(traces) < 2:
        return [], []
    ordered = sorted(traces, key=lambda tr: tr.stats.starttime)
    dt = 1.0 / float(ordered[0].stats.sampling_rate)
    gaps: list[tuple[UTCDateTime, float]] = []
    overlaps: list[tuple[UTCDateTime, float, bool]] = []
    last = ordered[0]
    for tr in ordered[1:]:
        end = last.stats.endtime
        step = float(tr.stats.starttime - end)  # dt when the segments are contiguous
        if step > 1.5 * dt:
            gaps.append((end + dt, step - dt))
        elif step < 0.5 * dt:
            overlap_end = min(end, tr.stats.endtime)
            length = float(overlap_end - tr.stats.starttime) + dt
            first = last.slice(tr.stats.starttime, overlap_end).data
            second = tr.slice(tr.stats.starttime, overlap_end).data
            k = min(first.size, second.size)
            conflicting = bool(k and not np.array_equal(first[:k], second[:k]))
            overlaps.append((tr.stats.starttime, length, conflicting))
        if tr.stats.endtime > end:
            last = tr
    return gaps, overlaps


def _requested_span(
    by_component: dict[str, Stream], start: UTCDateTime | None, end: UTCDateTime | None
) -> tuple[UTCDateTime, UTCDateTime]:
    """``start``..``end``, each defaulting to the edge of the traces (the span that will be
    read when no window is cut)."""
    traces = [tr for segments in by_component.values() for tr in segments]
    first = start if start is not None else min(tr.stats.starttime for tr in traces)
    last = end if end is not None else max(tr.stats.endtime + tr.stats.delta for tr in traces)
    return first, last


def _covered_s(traces: Stream, begin: UTCDateTime, end: UTCDateTime) -> float:
    """Seconds of ``[begin, end)`` covered by the segments (each sample lasting one sample
    period; overlapping segments counted once)."""
    spans = sorted((tr.stats.starttime, tr.stats.endtime + tr.stats.delta) for tr in traces)
    covered, reached = 0.0, begin
    for lo, hi in spans:
        lo, hi = max(lo, reached), min(hi, end)
        if hi > lo:
            covered += float(hi - lo)
            reached = hi
    return covered


def _one_rate(traces: Stream, span: tuple[UTCDateTime, UTCDateTime]) -> tuple[Stream, Stream]:
    """Segments of one channel at several rates -> ``(kept, dropped)``: the rate whose segments
    cover most of ``span`` is kept, ties (within one sample of the slowest rate) going to the
    higher rate. Counting segments would let a short stray segment outside the window win and
    leave the window empty though it was recorded."""
    by_rate: dict[float, Stream] = {}
    for tr in traces:
        by_rate.setdefault(float(tr.stats.sampling_rate), Stream()).append(tr)
    if len(by_rate) <= 1:
        return traces, Stream()
    covered = {rate: _covered_s(segments, *span) for rate, segments in by_rate.items()}
    tie = 1.0 / min(by_rate)
    most = max(covered.values())
    best = max(rate for rate, seconds in covered.items() if seconds >= most - tie)
    dropped = Stream([tr for rate, segments in by_rate.items() if rate != best for tr in segments])
    return by_rate[best], dropped


def _note_dropped(record: QualityRecord, comp: str, dropped: Stream, station: str) -> None:
    """Name the segments :func:`_one_rate` dropped in the quality record, per rate."""
    counts: dict[float, int] = {}
    for tr in dropped:
        rate = float(tr.stats.sampling_rate)
        counts[rate] = counts.get(rate, 0) + 1
    for rate, count in sorted(counts.items()):
        record.dropped_segments.append((comp, count, rate))
        logger.info(
            "%s: component %s holds segments at several rates; dropped %d at %g Hz",
            station, comp, count, rate,
        )  # fmt: skip


def _merge(traces: Stream, gap_fill: str):
    """One trace per component (one rate): gaps filled per ``gap_fill``, overlaps resolved by
    obspy (the first segment's samples kept)."""
    if len(traces) == 1:  # the usual case: no copy of the stats needed
        single = Trace(np.asarray(traces[0].data, dtype=np.float64))
        single.stats = traces[0].stats
        return single
    traces = traces.copy()
    for tr in traces:
        tr.data = np.asarray(tr.data, dtype=np.float64)
    if len(traces) > 1:
        fill = "interpolate" if gap_fill == "interpolate" else 0.0
        traces.merge(method=1, fill_value=fill)
    tr = traces[0]
    if np.ma.isMaskedArray(tr.data):
        tr.data = tr.data.filled(0.0)
    return tr


def _fill_missing(out: np.ndarray, info: StreamArray, config: PreprocessConfig) -> None:
    missing = info.missing
    if not missing:
        return
    info.quality.missing_fill = fill_description(config.missing_component, "Z" not in missing)
    if "Z" in missing:
        logger.info("%s: no vertical component; Z is zeros", info.station)
    for comp in missing.replace("Z", ""):
        row = COMPONENTS.index(comp)
        if config.missing_component == "copy_z" and "Z" not in missing:
            out[row] = out[0]
        else:
            out[row] = 0.0
    logger.debug(
        "%s: missing %s filled by policy %r", info.station, missing, config.missing_component
    )
