"""Where the waveforms of a catalog event come from: the reading layer for obspy Streams.

Training (:class:`quake.data.readers.catalog.CatalogDataset`) and classification read
miniSEED through the helpers here: one list of accepted suffixes (:data:`MSEED_SUFFIXES`, any
letter case), one way to find an event's folder that never leaves the waveform root
(:func:`event_folder`), one reader (:func:`read_mseed`) and one grouping by station.

Every source answers one question, :meth:`WaveformSource.fetch`: for one catalog event, the raw
traces of each station (``NET.STA.LOC``) plus what could not be read and why. Sources never
raise for bad data: an unreadable file, a missing folder or a failed request becomes a skip
with a reason, so one bad event never stops a batch.

- :class:`EventFolderSource`: ``<root>/waveforms/<event_id>/*.mseed`` (or ``<root>/<event_id>/``).
- :class:`SDSSource`: an SDS archive (``obspy.clients.filesystem.sds.Client``), a window
  ``[origin - before_s, origin + after_s]`` around each origin time.
- :class:`SeisBenchSource`: a SeisBench-format set (``metadata.csv`` + ``waveforms.hdf5``), the
  traces whose ``source_id`` is the event id.
- :class:`FDSNSource`: an FDSN web service (``obspy.clients.fdsn.Client``), stations within
  ``max_radius_deg`` of the epicentre. Needs network access; not exercised by the tests.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import obspy

from quake.data.components import COMPONENTS, station_key
from quake.data.mseed import event_folder, mseed_files, read_mseed
from quake.data.readers.seisbench import SeisBenchDataset, is_seisbench_folder
from quake.data.transforms import SkipTrace
from quake.options import DEFAULT_AFTER_S, DEFAULT_BEFORE_S, SOURCE_KINDS

logger = logging.getLogger(__name__)


@dataclass
class EventRequest:
    """What a source needs to know about one catalog event (picklable, for reader workers)."""

    event_id: str
    origin_time: obspy.UTCDateTime | None
    latitude: float | None = None
    longitude: float | None = None


@dataclass
class StationTraces:
    """The raw traces of one station (``NET.STA.LOC``) for one event."""

    station_id: str
    stream: obspy.Stream
    files: list[str] = field(default_factory=list)
    p_time: obspy.UTCDateTime | None = None  # from the source's own metadata (SeisBench sets)
    use_origin: bool = True  # False when the traces' absolute times are unknown


@dataclass
class EventTraces:
    """All a source found for one event: stations with traces, and ``(item, reason, detail)``
    skips (item ``"event"`` for the whole event; detail "" where the reason says it all)."""

    event_id: str
    stations: list[StationTraces] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)

    def skip(self, item: str, reason: str, detail: str = "") -> None:
        self.skipped.append((item, reason, detail))


def group_by_station(stream: obspy.Stream) -> dict[str, obspy.Stream]:
    """Split a stream by ``NET.STA.LOC``, in order of first appearance."""
    groups: dict[str, obspy.Stream] = {}
    for trace in stream:
        groups.setdefault(station_key(trace.stats), obspy.Stream()).append(trace)
    return groups


class WaveformSource:
    """Base class: ``fetch(request) -> EventTraces``; never raises for bad data."""

    kind = "base"

    def fetch(self, request: EventRequest) -> EventTraces:
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind


class StreamSource(WaveformSource):
    """An obspy Stream of one event, as a waveform source (``classify(stream)``)."""

    kind = "stream"

    def __init__(self, stream: obspy.Stream):
        self.stream = stream

    def describe(self) -> str:
        return f"an obspy Stream of {len(self.stream)} traces"

    def fetch(self, request: EventRequest) -> EventTraces:
        stations = [StationTraces(sid, st) for sid, st in group_by_station(self.stream).items()]
        result = EventTraces(request.event_id, stations)
        if not stations:
            result.skip("event", "empty stream")
        return result


class EventFolderSource(WaveformSource):
    """Per-event folders of miniSEED files: ``<root>/[waveforms/]<event_id>/*.mseed``.

    Each file is read on its own, so a corrupt file costs only its own traces (skip reason
    ``unreadable file``). An event without a folder gets the event-level skip ``no waveform folder``.
    """

    kind = "folders"

    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"waveform folder {root} does not exist or is not a directory")
        self.root = root / "waveforms" if (root / "waveforms").is_dir() else root

    def describe(self) -> str:
        return f"per-event folders under {self.root}"

    def fetch(self, request: EventRequest) -> EventTraces:
        result = EventTraces(request.event_id)
        try:
            folder = event_folder(self.root, request.event_id)
        except SkipTrace as skip:
            logger.warning("event %r skipped: %s", request.event_id, skip)
            result.skip("event", str(skip))
            return result
        if not folder.is_dir():
            result.skip("event", "no waveform folder")
            return result
        files = mseed_files(folder)
        if not files:
            result.skip("event", "no miniSEED files in folder")
            return result
        by_station: dict[str, StationTraces] = {}
        for path in files:
            try:
                stream = read_mseed(path)
            except Exception as err:  # obspy raises many types for corrupt data
                logger.warning(
                    "event %s: unreadable file %s (%s)", request.event_id, path.name, err
                )
                result.skip(path.name, "unreadable file")
                continue
            if len(stream) == 0:
                result.skip(path.name, "empty file")
                continue
            for station_id, traces in group_by_station(stream).items():
                entry = by_station.setdefault(station_id, StationTraces(station_id, obspy.Stream()))
                entry.stream += traces
                entry.files.append(path.name)
        result.stations = list(by_station.values())
        return result


class SDSSource(WaveformSource):
    """An SDS archive: every station with data that day, cut to ``[origin - before_s, origin + after_s]``."""

    kind = "sds"

    def __init__(
        self,
        root: str | os.PathLike | Any,
        before_s: float = DEFAULT_BEFORE_S,
        after_s: float = DEFAULT_AFTER_S,
        sds_type: str = "D",
    ):
        """``root``: the archive's folder, or an obspy SDS ``Client`` already made."""
        from obspy.clients.filesystem.sds import Client

        client = root if isinstance(root, Client) else None
        root = Path(client.sds_root if client is not None else root)
        if not root.is_dir():
            raise ValueError(f"SDS archive {root} does not exist or is not a directory")
        _check_margins(before_s, after_s)
        self.root = root
        self.before_s = float(before_s)
        self.after_s = float(after_s)
        self.client = client or Client(str(root), sds_type=sds_type)
        self._nslc_by_day: dict[tuple[int, int], list[tuple[str, str, str, str]]] = {}

    def describe(self) -> str:
        return f"SDS archive {self.root} ({self.before_s:g} s before to {self.after_s:g} s after origin)"

    def _stations_on(self, t: obspy.UTCDateTime) -> list[tuple[str, str, str]]:
        key = (t.year, t.julday)
        if key not in self._nslc_by_day:
            self._nslc_by_day[key] = self.client.get_all_nslc(datetime=t)
        return sorted({(n, s, loc) for n, s, loc, _ in self._nslc_by_day[key]})

    def fetch(self, request: EventRequest) -> EventTraces:
        result = EventTraces(request.event_id)
        if request.origin_time is None:
            result.skip("event", "no origin time")
            return result
        t0 = request.origin_time - self.before_s
        t1 = request.origin_time + self.after_s
        try:
            stations = sorted(set(self._stations_on(t0)) | set(self._stations_on(t1)))
        except Exception as err:
            logger.warning("event %s: SDS archive listing failed (%s)", request.event_id, err)
            result.skip("event", "archive listing failed")
            return result
        for net, sta, loc in stations:
            station_id = f"{net}.{sta}.{loc}"
            try:
                stream = self.client.get_waveforms(net, sta, loc, "*", t0, t1)
            except Exception as err:
                logger.warning(
                    "event %s: %s unreadable in SDS (%s)", request.event_id, station_id, err
                )
                result.skip(station_id, "unreadable file")
                continue
            if len(stream):
                result.stations.append(StationTraces(station_id, stream))
        if not result.stations and not result.skipped:
            result.skip("event", "no data in archive around origin")
        return result


class SeisBenchSource(WaveformSource):
    """A SeisBench-format set: the traces whose ``source_id`` equals the event id.

    Each (3, n) trace becomes a three-channel obspy Stream (Z, N, E, starting at
    ``trace_start_time`` when the set has it) and keeps its P pick (``trace_p_arrival_sample``),
    so it is windowed by the same code as miniSEED data. A trace that cannot be used, whether
    found while opening the set (its waveform absent from the HDF5 file, no sampling rate) or on
    reading (a bad shape or dtype), is a skip of its event named by its ``trace_name``.
    """

    kind = "seisbench"

    def __init__(self, path: str | os.PathLike, config=None):
        self.path = Path(path)
        self.dataset = SeisBenchDataset(self.path, config)
        metadata = self.dataset.metadata
        if "source_id" not in metadata.columns:
            raise ValueError(
                f"SeisBench set {self.path} has no source_id column to match events by"
            )
        self._rows: dict[str, list[int]] = defaultdict(list)
        for i, source_id in enumerate(metadata["source_id"].astype(str)):
            self._rows[source_id].append(i)
        # Rows dropped while opening the set (no waveform in the file, ...): named in their
        # event's row, as the traces that fail to read are.
        self._opening_skips: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for name, source_id, reason in self.dataset.skipped_rows.itertuples(index=False):
            self._opening_skips[str(source_id)].append((str(name), reason))

    def describe(self) -> str:
        return f"SeisBench set {self.path} ({len(self.dataset)} traces)"

    def fetch(self, request: EventRequest) -> EventTraces:
        result = EventTraces(request.event_id)
        event_id = str(request.event_id)
        rows = self._rows.get(event_id, [])
        for name, reason in self._opening_skips.get(event_id, []):
            result.skip(name, reason.split(":", 1)[0], reason)
        if not rows:
            if not result.skipped:
                result.skip("event", "no traces with this source_id")
            return result
        # one batched read: an event's traces usually sit side by side in a bucket
        for waveform, meta in self.dataset.get_samples(rows):
            name = _meta_text(meta, "trace_name")
            try:
                if isinstance(waveform, Exception):
                    raise waveform
                station = _seisbench_station(waveform, meta)
            except SkipTrace as skip:
                logger.warning("event %s: trace %s skipped (%s)", event_id, name, skip)
                result.skip(name, skip.reason, str(skip))
                continue
            except Exception as err:  # a bug or bad metadata costs this trace, not the batch
                logger.warning("event %s: trace %s unreadable (%s)", event_id, name, err)
                result.skip(name, "unreadable trace", f"{type(err).__name__}: {err}")
                continue
            result.stations.append(station)
        return result


def _meta_text(meta: dict, key: str, default: str = "") -> str:
    value = meta.get(key, default)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return default
    return str(value)


def _seisbench_station(waveform: np.ndarray, meta: dict) -> StationTraces:
    rate = float(meta["trace_sampling_rate_hz"])
    start_text = _meta_text(meta, "trace_start_time")
    # Without trace_start_time the trace cannot be placed against the origin time: it is then
    # windowed as the adapter does for training (at its P sample, else from its start).
    start = obspy.UTCDateTime(start_text) if start_text else obspy.UTCDateTime(0)
    net = _meta_text(meta, "station_network_code")
    sta = _meta_text(meta, "station_code") or _meta_text(meta, "trace_name", "trace")
    loc = _meta_text(meta, "station_location_code")
    band = _meta_text(meta, "trace_channel", "HH")[:2] or "HH"
    stream = obspy.Stream()
    for component, data in zip(COMPONENTS, np.asarray(waveform, dtype=np.float32), strict=False):
        stats = {
            "network": net,
            "station": sta,
            "location": loc,
            "channel": band + component,
            "sampling_rate": rate,
            "starttime": start,
        }
        stream.append(obspy.Trace(data=np.ascontiguousarray(data), header=stats))
    p_sample = meta.get("trace_p_arrival_sample")
    p_time = None
    if p_sample is not None and not (isinstance(p_sample, float) and np.isnan(p_sample)):
        p_time = start + float(p_sample) / rate
    trace_name = _meta_text(meta, "trace_name")
    station_id = trace_name or f"{net}.{sta}.{loc}"  # a set may hold several traces per station
    return StationTraces(
        station_id,
        stream,
        files=[trace_name] if trace_name else [],
        p_time=p_time,
        use_origin=bool(start_text),
    )


class FDSNSource(WaveformSource):
    """An FDSN web service: stations within ``max_radius_deg`` of the epicentre, one bulk request per event."""

    kind = "fdsn"

    def __init__(
        self,
        base_url: str | Any,
        before_s: float = DEFAULT_BEFORE_S,
        after_s: float = DEFAULT_AFTER_S,
        max_radius_deg: float = 1.0,
        channels: str = "HH?,BH?,EH?,HN?",
        timeout_s: float = 60.0,
    ):
        """``base_url``: the service's URL, or an obspy FDSN ``Client`` already made."""
        from obspy.clients.fdsn import Client

        _check_margins(before_s, after_s)
        if max_radius_deg <= 0:
            raise ValueError(f"max_radius_deg must be > 0, got {max_radius_deg!r}")
        client = base_url if isinstance(base_url, Client) else None
        base_url = client.base_url if client is not None else base_url
        self.base_url = base_url
        self.before_s = float(before_s)
        self.after_s = float(after_s)
        self.max_radius_deg = float(max_radius_deg)
        self.channels = channels
        self.client = client or Client(base_url, timeout=timeout_s)

    def describe(self) -> str:
        return f"FDSN service {self.base_url} (radius {self.max_radius_deg:g} deg)"

    def fetch(self, request: EventRequest) -> EventTraces:
        result = EventTraces(request.event_id)
        if request.origin_time is None or request.latitude is None or request.longitude is None:
            result.skip("event", "no origin time or epicentre for an FDSN request")
            return result
        t0 = request.origin_time - self.before_s
        t1 = request.origin_time + self.after_s
        try:
            inventory = self.client.get_stations(
                starttime=t0,
                endtime=t1,
                latitude=request.latitude,
                longitude=request.longitude,
                maxradius=self.max_radius_deg,
                channel=self.channels,
                level="channel",
            )
            bulk = sorted(
                {
                    (net.code, sta.code, cha.location_code, cha.code, t0, t1)
                    for net in inventory
                    for sta in net
                    for cha in sta
                }
            )
            stream = self.client.get_waveforms_bulk(bulk) if bulk else obspy.Stream()
        except Exception as err:  # no data (204), timeouts, HTTP errors
            logger.warning("event %s: FDSN request failed (%s)", request.event_id, err)
            result.skip("event", "FDSN request failed")
            return result
        for station_id, traces in group_by_station(stream).items():
            result.stations.append(StationTraces(station_id, traces))
        if not result.stations:
            result.skip("event", "no FDSN data around origin")
        return result


def _check_margins(before_s: float, after_s: float) -> None:
    for name, value in (("before_s", before_s), ("after_s", after_s)):
        if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if before_s + after_s <= 0:
        raise ValueError(
            f"the request window is empty (before_s={before_s!r}, after_s={after_s!r})"
        )


def _looks_like_sds(root: Path) -> bool:
    return any(child.is_dir() and re.fullmatch(r"\d{4}", child.name) for child in root.iterdir())


def detect_source_kind(path: str) -> str:
    """``auto`` resolution: URL -> fdsn; metadata.csv + waveforms.hdf5 (or SeisBench chunks) ->
    seisbench; year folders
    -> sds; any other folder -> folders."""
    if re.match(r"^https?://", path):
        return "fdsn"
    root = Path(path)
    if not root.is_dir():
        raise ValueError(
            f"waveforms {path!r} is neither an existing folder nor an http(s) FDSN URL"
        )
    if is_seisbench_folder(root):
        return "seisbench"
    if _looks_like_sds(root):
        return "sds"
    return "folders"


def open_source(
    path: str | Any,
    kind: str = "auto",
    *,
    before_s: float = DEFAULT_BEFORE_S,
    after_s: float = DEFAULT_AFTER_S,
    config=None,
) -> WaveformSource:
    """Build the waveform source for ``--waveforms PATH --source KIND``; ``path`` may also be an
    obspy SDS or FDSN ``Client``, or a source already made."""
    if isinstance(path, WaveformSource):
        return path
    if not isinstance(path, (str, os.PathLike)):
        from obspy.clients.fdsn import Client as FDSNClient
        from obspy.clients.filesystem.sds import Client as SDSClient

        if isinstance(path, SDSClient):
            return SDSSource(path, before_s=before_s, after_s=after_s)
        if isinstance(path, FDSNClient):
            return FDSNSource(path, before_s=before_s, after_s=after_s)
        raise ValueError(
            f"waveforms {path!r}: expected a path, an URL, or an obspy SDS or FDSN Client"
        )
    if kind not in SOURCE_KINDS:
        raise ValueError(f"unknown source {kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
    if kind == "auto":
        kind = detect_source_kind(str(path))
    if kind == "folders":
        return EventFolderSource(path)
    if kind == "sds":
        return SDSSource(path, before_s=before_s, after_s=after_s)
    if kind == "seisbench":
        return SeisBenchSource(path, config)
    return FDSNSource(str(path), before_s=before_s, after_s=after_s)
