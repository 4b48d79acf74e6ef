"""Event catalog + miniSEED folders: ``catalog.xml`` (QuakeML) or ``catalog.csv``, and
``waveforms/<event_id>/*.mseed``.

One sample is one station (``NET.STA.LOC``) of one event. A station's channel band with the
highest sampling rate >= ``min_sampling_rate_hz`` is used (``BHZ`` 40 Hz over ``LHZ`` 1 Hz);
the slower bands are ignored, not counted as skips. Opening reads only miniSEED headers;
samples are read on :meth:`get_sample`, and come back resampled to ``config.sampling_rate_hz``.

Labels come from ``event_type``. The TRIMMING anchor is the P pick of the station when the
QuakeML has one (``trace_p_arrival_sample``), else the origin time (``source_origin_time``
relative to ``trace_start_time``). Skipped with a reason: an event without a waveform folder, an
unreadable miniSEED file, a station with no fast-enough channel or an unknown channel code, an
event with an unknown type. An empty catalog is a ValueError.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import obspy
import pandas as pd
from obspy import Stream, UTCDateTime

from quake.classes import validate_class_name
from quake.data.components import component_of, select_band, station_key, stream_to_array_info
from quake.data.config import PreprocessConfig
from quake.data.readers.base import WaveformDataset
from quake.data.transforms import SkipTrace

logger = logging.getLogger(__name__)

CATALOG_FILES = ("catalog.xml", "catalog.csv")
WAVEFORM_DIR = "waveforms"
MSEED_PATTERNS = ("*.mseed", "*.miniseed", "*.msd")
ORIGIN_TIME_COLUMNS = ("time", "origin_time", "source_origin_time")


@dataclass
class CatalogEvent:
    event_id: str
    event_type: str | None
    origin_time: UTCDateTime | None = None
    latitude: float | None = None
    longitude: float | None = None
    depth_km: float | None = None
    magnitude: float | None = None
    magnitude_type: str | None = None
    p_picks: dict[str, UTCDateTime] = field(default_factory=dict)  # NET.STA.LOC or NET.STA -> time


def event_id_from_resource_id(resource_id: object) -> str:
    """``smi:uw.anss.org/event/uw61348817`` -> ``uw61348817`` (last path segment)."""
    text = str(resource_id).strip().rstrip("/")
    return text.split("/")[-1].split("?")[-1].split("=")[-1]


def read_quakeml(path: Path) -> list[CatalogEvent]:
    try:
        catalog = obspy.read_events(str(path))
    except Exception as exc:  # obspy raises many types for a malformed file
        raise ValueError(f"cannot read QuakeML catalog {path}: {exc}") from exc
    events = []
    for ev in catalog:
        origin = ev.preferred_origin() or (ev.origins[0] if ev.origins else None)
        magnitude = ev.preferred_magnitude() or (ev.magnitudes[0] if ev.magnitudes else None)
        picks: dict[str, UTCDateTime] = {}
        for pick in ev.picks:
            if not str(pick.phase_hint or "").upper().startswith("P"):
                continue
            wid = pick.waveform_id
            keys = [f"{wid.network_code}.{wid.station_code}"]
            if wid.location_code is not None:
                keys.insert(0, f"{wid.network_code}.{wid.station_code}.{wid.location_code}")
            for key in keys:
                if key not in picks or pick.time < picks[key]:
                    picks[key] = pick.time
        events.append(
            CatalogEvent(
                event_id=event_id_from_resource_id(ev.resource_id),
                event_type=str(ev.event_type) if ev.event_type is not None else None,
                origin_time=origin.time if origin is not None else None,
                latitude=origin.latitude if origin is not None else None,
                longitude=origin.longitude if origin is not None else None,
                depth_km=origin.depth / 1000.0
                if origin is not None and origin.depth is not None
                else None,
                magnitude=magnitude.mag if magnitude is not None else None,
                magnitude_type=magnitude.magnitude_type if magnitude is not None else None,
                p_picks=picks,
            )
        )
    return events


def read_catalog_csv(path: Path) -> list[CatalogEvent]:
    try:
        table = pd.read_csv(path, dtype={"event_id": str})
    except pd.errors.EmptyDataError:
        return []
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read catalog {path}: {exc}") from exc
    for column in ("event_id", "event_type"):
        if column not in table.columns:
            raise ValueError(
                f"catalog {path} has no {column!r} column; columns: {list(table.columns)}"
            )
    time_column = next((c for c in ORIGIN_TIME_COLUMNS if c in table.columns), None)
    events = []
    for row in table.to_dict("records"):
        events.append(
            CatalogEvent(
                event_id=str(row["event_id"]).strip(),
                event_type=None if pd.isna(row["event_type"]) else str(row["event_type"]),
                origin_time=UTCDateTime(row[time_column])
                if time_column and not pd.isna(row[time_column])
                else None,
                latitude=_float(row.get("latitude")),
                longitude=_float(row.get("longitude")),
                depth_km=_float(row.get("depth_km")),
                magnitude=_float(row.get("magnitude")),
                magnitude_type=None
                if pd.isna(row.get("magnitude_type"))
                else str(row.get("magnitude_type")),
            )
        )
    return events


def find_catalog(path: Path) -> Path | None:
    for name in CATALOG_FILES:
        if (path / name).is_file():
            return path / name
    return None


class CatalogDataset(WaveformDataset):
    """A catalog + miniSEED folder; ``path`` is the folder or the catalog file itself."""

    def __init__(self, path: str | os.PathLike, config: PreprocessConfig | None = None):
        path = Path(path)
        if path.is_file():
            catalog_path, folder = path, path.parent
        else:
            folder = path
            found = find_catalog(folder)
            if found is None:
                raise ValueError(
                    f"{folder} holds no catalog; expected one of {list(CATALOG_FILES)}"
                )
            catalog_path = found
        config = config or PreprocessConfig()
        self.catalog_path = catalog_path
        self.waveform_dir = folder / WAVEFORM_DIR
        if catalog_path.suffix.lower() == ".csv":
            events = read_catalog_csv(catalog_path)
        else:
            events = read_quakeml(catalog_path)
        if not events:
            raise ValueError(f"catalog {catalog_path} holds no event; expected at least one")
        rows: list[dict[str, Any]] = []
        skipped: list[tuple[str, str]] = []
        for event in events:
            self._index_event(event, config, rows, skipped)
        metadata = pd.DataFrame(rows)
        super().__init__(metadata, path=folder, config=config, skipped=skipped)
        self.events = {e.event_id: e for e in events}

    def _index_event(
        self,
        event: CatalogEvent,
        config: PreprocessConfig,
        rows: list[dict[str, Any]],
        skipped: list[tuple[str, str]],
    ) -> None:
        try:
            label = validate_class_name(event.event_type)
        except ValueError:
            skipped.append((event.event_id, f"unknown label: event_type {event.event_type!r}"))
            return
        event_dir = self.waveform_dir / event.event_id
        if not event_dir.is_dir():
            skipped.append(
                (event.event_id, f"no waveforms: folder {WAVEFORM_DIR}/{event.event_id} is missing")
            )
            return
        files = sorted({f for pattern in MSEED_PATTERNS for f in event_dir.glob(pattern)})
        if not files:
            skipped.append(
                (
                    event.event_id,
                    f"no waveforms: no miniSEED file in {WAVEFORM_DIR}/{event.event_id}",
                )
            )
            return
        by_station: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
        for f in files:
            try:
                header = obspy.read(str(f), format="MSEED", headonly=True)
            except Exception as exc:  # obspy/libmseed raise several types for corrupt files
                skipped.append(
                    (f"{event.event_id}/{f.name}", f"unreadable: {type(exc).__name__}: {exc}")
                )
                continue
            for tr in header:
                by_station[station_key(tr.stats)].append((f, tr))
        for station, entries in sorted(by_station.items()):
            item = f"{event.event_id}.{station}"
            try:
                chosen = select_band(Stream([tr for _, tr in entries]), config)
                components = sorted({component_of(tr.stats.channel) for tr in chosen})
            except SkipTrace as exc:
                skipped.append((item, str(exc)))
                continue
            band = chosen[0].stats.channel[:-1]
            chosen_files = sorted({f.name for f, tr in entries if tr.stats.channel[:-1] == band})
            start = min(tr.stats.starttime for tr in chosen)
            net, sta, loc = station.split(".")
            pick = event.p_picks.get(station, event.p_picks.get(f"{net}.{sta}"))
            rows.append(
                {
                    "trace_name": f"{item}.{band}",
                    "source_id": event.event_id,
                    "source_type": label,
                    "source_origin_time": str(event.origin_time) if event.origin_time else None,
                    "source_latitude_deg": event.latitude,
                    "source_longitude_deg": event.longitude,
                    "source_depth_km": event.depth_km,
                    "source_magnitude": event.magnitude,
                    "source_magnitude_type": event.magnitude_type,
                    "station_network_code": net,
                    "station_code": sta,
                    "station_location_code": loc,
                    "trace_channel": band,
                    "trace_components": "".join(c for c in "ZNE" if c in components),
                    "trace_sampling_rate_hz": config.sampling_rate_hz,
                    "trace_original_sampling_rate_hz": max(
                        float(tr.stats.sampling_rate) for tr in chosen
                    ),
                    "trace_start_time": str(start),
                    "trace_p_arrival_sample": (pick - start) * config.sampling_rate_hz
                    if pick
                    else np.nan,
                    "trace_source_files": ";".join(
                        f"{event.event_id}/{name}" for name in chosen_files
                    ),
                }
            )

    def _load(self, row: dict[str, Any]) -> np.ndarray:
        stream = Stream()
        for rel in str(row["trace_source_files"]).split(";"):
            try:
                stream += obspy.read(str(self.waveform_dir / rel), format="MSEED")
            except Exception as exc:
                raise SkipTrace("unreadable", f"{rel}: {type(exc).__name__}: {exc}") from None
        band = row["trace_channel"]
        station = (
            f"{row['station_network_code']}.{row['station_code']}.{row['station_location_code']}"
        )
        stream = Stream(
            [
                tr
                for tr in stream
                if tr.stats.channel[:-1] == band and station_key(tr.stats) == station
            ]
        )
        if not len(stream):
            raise SkipTrace(
                "unreadable", f"no {band}? trace of {station} in {row['trace_source_files']}"
            )
        return stream_to_array_info(
            stream, self.config, start=UTCDateTime(row["trace_start_time"])
        ).data


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(out) else out
