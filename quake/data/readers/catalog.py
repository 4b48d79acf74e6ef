"""Event catalog + miniSEED folders: a catalog file (``catalog.xml``, ``catalog.quakeml``,
``catalog.qml`` or ``catalog.csv``: :data:`quake.data.catalog.CATALOG_FILES`, found by
:func:`quake.data.catalog.find_catalog`) and ``waveforms/<event_id>/*.mseed``.

One sample is one station (``NET.STA.LOC``) of one event. A station's channel band with the
highest sampling rate >= ``min_sampling_rate_hz`` is used (``BHZ`` 40 Hz over ``LHZ`` 1 Hz);
the slower bands are ignored, not counted as skips. Opening reads only miniSEED headers;
samples are read on :meth:`get_sample`, and come back resampled to ``config.sampling_rate_hz``.

The catalog is parsed by :func:`quake.data.catalog.read_catalog`, the parser batch
classification uses too, so event ids, origins and P picks are the same on both sides.
Labels come from ``event_type``, read as class names (``not existing`` is ``noise``,
:func:`quake.classes.event_type_to_class`). The TRIMMING anchor is the P pick of the station when the
QuakeML has one (``trace_p_arrival_sample``), else the origin time (``source_origin_time``
relative to ``trace_start_time``). Skipped with a reason: an event whose origin time is not a
date-time, an event without a waveform folder, an unreadable miniSEED file, a station with no fast-enough channel or an unknown channel code, an
event with an unknown type. An empty catalog, a CSV catalog without an ``event_type`` column
and empty or repeated event ids are ValueErrors.

``unlabelled=True`` (pretraining, :mod:`quake.pretrain`) reads a catalog without event types
(e.g. ``event_id,time``): every event is indexed, its type ignored, and the metadata has no
``source_type`` column.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from obspy import Stream, UTCDateTime

from quake.data.catalog import (
    CATALOG_FILES,
    CATALOG_SUFFIXES,
    find_catalog,
    float_or_none,
    read_catalog,
    text_or_empty,
)
from quake.data.components import (
    StreamArray,
    component_of,
    select_band,
    station_key,
    stream_to_array_info,
)
from quake.data.config import PreprocessConfig
from quake.data.mseed import event_folder, mseed_files, read_mseed
from quake.data.quality import COMPONENTS
from quake.data.readers.base import LabelSpec, WaveformDataset, unknown_label_reason
from quake.data.transforms import SkipTrace

logger = logging.getLogger(__name__)

WAVEFORM_DIR = "waveforms"


class CatalogDataset(WaveformDataset):
    """A catalog + miniSEED folder; ``path`` is the folder or the catalog file itself."""

    def __init__(
        self,
        path: str | os.PathLike,
        config: PreprocessConfig | None = None,
        labels: LabelSpec | None = None,
        *,
        unlabelled: bool = False,
    ):
        catalog_path = find_catalog(path)
        if catalog_path is None:
            raise ValueError(
                f"{str(path)!r} holds no catalog; expected a catalog file "
                f"({', '.join(CATALOG_SUFFIXES)}) or a folder with one of {list(CATALOG_FILES)}"
            )
        folder = catalog_path.parent
        config = config or PreprocessConfig()
        self.label_spec = labels or LabelSpec()
        self.unlabelled = bool(unlabelled)
        self.catalog_path = catalog_path
        self.waveform_dir = folder / WAVEFORM_DIR
        # labels come from event_type, so a labelled CSV catalog must have that column
        events = read_catalog(catalog_path, require=() if self.unlabelled else ("event_type",))
        if events.empty:
            raise ValueError(f"catalog {catalog_path} holds no event; expected at least one")
        rows: list[dict[str, Any]] = []
        skipped: list[tuple[str, str]] = []
        for event in events.to_dict("records"):
            self._index_event(event, config, rows, skipped)
        metadata = pd.DataFrame(rows)
        super().__init__(metadata, path=folder, config=config, skipped=skipped)
        self.events = events  # the catalog table (quake.data.catalog.CATALOG_COLUMNS)

    def _index_event(
        self,
        event: dict[str, Any],
        config: PreprocessConfig,
        rows: list[dict[str, Any]],
        skipped: list[tuple[str, str]],
    ) -> None:
        """One row of the catalog table -> metadata rows of its stations, or skips."""
        event_id = event["event_id"]
        if event["skip_reason"]:  # e.g. a bad origin time, named by the catalog parser
            skipped.append((event_id, event["skip_reason"]))
            return
        label = None
        if not self.unlabelled:
            event_type = event["event_type"] or None
            label = self.label_spec.class_name(event_type) if event_type is not None else None
            if label is None:
                skipped.append((event_id, unknown_label_reason(event_type, "event_type ")))
                return
        try:
            event_dir = event_folder(self.waveform_dir, event_id)
        except SkipTrace as exc:
            skipped.append((event_id, str(exc)))
            return
        if not event_dir.is_dir():
            skipped.append((event_id, f"no waveforms: folder {WAVEFORM_DIR}/{event_id} is missing"))
            return
        files = mseed_files(event_dir)
        if not files:
            skipped.append(
                (
                    event_id,
                    f"no waveforms: no miniSEED file in {WAVEFORM_DIR}/{event_id}",
                )
            )
            return
        origin_time = str(event["origin_time"]) if event["origin_time"] else None
        picks = event["p_picks"]
        for rec in index_recordings(
            files, config, skipped, event_id, lambda st: f"{event_id}.{st}"
        ):
            station, band, start, chosen_files = rec.station, rec.band, rec.start, rec.files
            item = f"{event_id}.{station}"
            net, sta, loc = station.split(".")
            pick = picks.get(station, picks.get(f"{net}.{sta}"))
            row = {
                "trace_name": f"{item}.{band}",
                "source_id": event_id,
                "source_type": label,
                "source_origin_time": origin_time,
                "source_latitude_deg": float_or_none(event["latitude"]),
                "source_longitude_deg": float_or_none(event["longitude"]),
                "source_depth_km": float_or_none(event["depth_km"]),
                "source_magnitude": float_or_none(event["magnitude"]),
                "source_magnitude_type": text_or_empty(event["magnitude_type"]) or None,
                "station_network_code": net,
                "station_code": sta,
                "station_location_code": loc,
                "trace_channel": band,
                "trace_components": rec.components,
                "trace_sampling_rate_hz": config.sampling_rate_hz,
                "trace_original_sampling_rate_hz": rec.original_rate_hz,
                "trace_start_time": str(start),
                "trace_p_arrival_sample": (pick - start) * config.sampling_rate_hz
                if pick
                else np.nan,
                "trace_source_files": ";".join(f"{event_id}/{name}" for name in chosen_files),
            }
            if self.unlabelled:
                del row["source_type"]
            rows.append(row)

    def _load(self, row: dict[str, Any]) -> StreamArray:
        return load_station_files(self.waveform_dir, row, self.config)


@dataclass
class StationRecording:
    """One station's recording among a folder's miniSEED files, from their headers alone: the
    band the model would use (:func:`~quake.data.components.select_band`) and where it is."""

    station: str  # NET.STA.LOC
    band: str  # channel code without its component letter, e.g. "HH"
    components: str  # the component letters present, in Z, N, E order
    files: list[str]  # names of the files that hold this band
    start: UTCDateTime
    end: UTCDateTime
    original_rate_hz: float


def index_recordings(
    files: list[Path],
    config: PreprocessConfig,
    skipped: list[tuple[str, str]],
    folder_label: str,
    item_of: Callable[[str], str],
) -> list[StationRecording]:
    """The stations recorded in ``files`` (one event's folder, or any folder), in station order;
    an unreadable or empty file and a station without a usable band are appended to
    ``skipped`` (as ``folder_label/file`` and ``item_of(station)``). Shared by the catalog
    reader and the plain miniSEED tree (:mod:`quake.data.readers.mseed_tree`)."""
    by_station: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    for f in files:
        try:
            header = read_mseed(f, headonly=True)
        except Exception as exc:  # obspy/libmseed raise several types for corrupt files
            skipped.append((f"{folder_label}/{f.name}", f"unreadable: {type(exc).__name__}: {exc}"))
            continue
        if not len(header):
            skipped.append((f"{folder_label}/{f.name}", "empty: no record in the file"))
        for tr in header:
            by_station[station_key(tr.stats)].append((f, tr))
    recordings = []
    for station, entries in sorted(by_station.items()):
        try:
            chosen = select_band(Stream([tr for _, tr in entries]), config)
        except SkipTrace as exc:
            skipped.append((item_of(station), str(exc)))
            continue
        letters = {component_of(tr.stats.channel) for tr in chosen}
        band = chosen[0].stats.channel[:-1]
        recordings.append(
            StationRecording(
                station=station,
                band=band,
                components="".join(c for c in COMPONENTS if c in letters),
                files=sorted({f.name for f, tr in entries if tr.stats.channel[:-1] == band}),
                start=min(tr.stats.starttime for tr in chosen),
                end=max(tr.stats.endtime for tr in chosen),
                original_rate_hz=max(float(tr.stats.sampling_rate) for tr in chosen),
            )
        )
    return recordings


def load_station_files(root: Path, row: dict[str, Any], config: PreprocessConfig) -> StreamArray:
    """The traces of one metadata row (its ``trace_source_files`` under ``root``, the channels of
    its ``trace_channel`` band and station), converted from ``trace_start_time`` on. Shared by
    the catalog reader and the plain miniSEED tree (:mod:`quake.data.readers.mseed_tree`)."""
    stream = Stream()
    for rel in str(row["trace_source_files"]).split(";"):
        try:
            stream += read_mseed(root / rel)
        except Exception as exc:
            raise SkipTrace("unreadable", f"{rel}: {type(exc).__name__}: {exc}") from None
    band = row["trace_channel"]
    station = f"{row['station_network_code']}.{row['station_code']}.{row['station_location_code']}"
    stream = Stream(
        [tr for tr in stream if tr.stats.channel[:-1] == band and station_key(tr.stats) == station]
    )
    if not len(stream):
        raise SkipTrace(
            "unreadable", f"no {band}? trace of {station} in {row['trace_source_files']}"
        )
    return stream_to_array_info(stream, config, start=UTCDateTime(row["trace_start_time"]))
