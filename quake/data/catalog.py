"""Event catalogs -> one table of events: the one parser behind training and classification.

QuakeML (``.xml``, ``.quakeml``, ``.qml``) or CSV, one row per event in catalog order
(:data:`CATALOG_COLUMNS`), keyed by an event id that names the event's waveform folder. The
catalog + miniSEED dataset (:class:`quake.data.readers.catalog.CatalogDataset`) and batch
classification (:mod:`quake.classify`) both read catalogs here, so an event gets the same id,
origin, magnitude, type, review flag and P picks in training and in classification. The id rule
is explicit (:data:`ID_RULES`), so the same catalog always gives the same ids.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import obspy
import pandas as pd
from obspy.core.event import Catalog, Event, Magnitude, Origin, ResourceIdentifier
from obspy.core.event.header import EventType
from pandas.api.types import union_categoricals

from quake.classes import class_to_event_type
from quake.options import ID_RULES  # how event ids are made

logger = logging.getLogger(__name__)


#: CSV columns that hold the origin time, the first one present wins.
ORIGIN_TIME_COLUMNS = ("time", "origin_time", "source_origin_time")

#: Evaluation statuses that mark an analyst-reviewed origin.
REVIEWED_STATUSES = ("reviewed", "final")

#: The event table's columns. ``origin_time`` is an ``obspy.UTCDateTime`` or None; numbers are
#: floats or None/NaN; ``event_type``, ``magnitude_type`` and the evaluation fields are text,
#: "" when unknown; ``p_picks`` maps ``NET.STA.LOC`` and ``NET.STA`` to the first P pick time;
#: ``skip_reason`` says why an event cannot be used ("bad origin time: '2018-13-45T99:00:00'"),
#: "" when it can: such an event stays in the table (classification gives it its row) and is
#: named in one warning when the catalog is read.
#: A compact table (``read_catalog(..., compact=True)``, for catalogs of millions of events)
#: holds the same values without a Python object per event where it can: ``origin_time`` as
#: ``datetime64[ns]`` (UTC, NaT when unknown; read it with :func:`utc_or_none`), numbers as
#: float64 (NaN), the text fields as categoricals, ``p_picks`` None for an event without picks.
CATALOG_COLUMNS = (
    "event_id",
    "origin_time",
    "latitude",
    "longitude",
    "depth_km",
    "magnitude",
    "magnitude_type",
    "event_type",
    "evaluation_mode",
    "evaluation_status",
    "reviewed",
    "p_picks",
    "skip_reason",
)

#: Fields a caller may insist a CSV catalog has a column for (``require=``); a QuakeML event
#: always has them (possibly empty).
CSV_FIELDS = tuple(
    c for c in CATALOG_COLUMNS if c not in ("event_id", "reviewed", "p_picks", "skip_reason")
)

QUAKEML_SUFFIXES = (".xml", ".quakeml", ".qml")
#: Every suffix read as a catalog: QuakeML, then CSV.
CATALOG_SUFFIXES = (*QUAKEML_SUFFIXES, ".csv")
#: The catalog file of a catalog + miniSEED folder, in the order :func:`find_catalog` looks.
CATALOG_FILES = tuple(f"catalog{suffix}" for suffix in CATALOG_SUFFIXES)


# --- small value helpers -----------------------------------------------------------------------
def float_or_none(value: object) -> float | None:
    """The value as a float; None when it is missing, NaN or not a number."""
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def text_or_empty(value: object) -> str:
    """Stripped text, "" for None and NaN (pandas' missing value)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def utc_or_none(value: object) -> obspy.UTCDateTime | None:
    """An origin time of an event table as a UTCDateTime (a compact table holds datetime64);
    None when unknown."""
    if isinstance(value, obspy.UTCDateTime):
        return value
    if value is None or pd.isna(value):
        return None
    return obspy.UTCDateTime(ns=int(pd.Timestamp(value).value))


# --- event ids ---------------------------------------------------------------------------------
def event_id_from_resource_id(resource_id: object) -> str:
    """``smi:uw.anss.org/event/uw61348817`` -> ``uw61348817`` (last path segment)."""
    text = str(resource_id).strip().rstrip("/")
    return text.split("/")[-1].split("?")[-1].split("=")[-1]


def check_id_rule(id_rule: str) -> None:
    """ValueError naming ``id_rule`` unless it is one of :data:`ID_RULES`."""
    if id_rule in ("auto", "last-segment", "resource-id"):
        return
    if id_rule.startswith("column:") and len(id_rule) > len("column:"):
        return
    if id_rule.startswith("regex:") and len(id_rule) > len("regex:"):
        try:
            re.compile(id_rule[len("regex:") :])
        except re.error as err:
            raise ValueError(
                f"id rule {id_rule!r} holds an invalid regular expression: {err}"
            ) from err
        return
    raise ValueError(f"unknown id rule {id_rule!r}; expected one of {', '.join(ID_RULES)}")


def _apply_regex(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"id rule regex:{pattern} does not match {text!r}")
    return match.group(1) if match.groups() else match.group(0)


def quakeml_event_id(event: Event, id_rule: str = "auto") -> str:
    """The event id of a QuakeML event under ``id_rule`` (see :data:`ID_RULES`)."""
    check_id_rule(id_rule)
    rid = str(event.resource_id.id) if event.resource_id is not None else ""
    if id_rule in ("auto", "last-segment"):
        return event_id_from_resource_id(rid)
    if id_rule == "resource-id":
        return rid
    if id_rule.startswith("regex:"):
        return _apply_regex(id_rule[len("regex:") :], rid)
    raise ValueError(
        f"id rule {id_rule!r} applies to CSV catalogs; a QuakeML catalog takes "
        "auto, last-segment, resource-id or regex:PATTERN"
    )


def find_catalog(path: str | os.PathLike) -> Path | None:
    """The catalog of ``path``: the path itself when it is a file with a catalog suffix
    (:data:`CATALOG_SUFFIXES`), the first of :data:`CATALOG_FILES` in it when it is a folder,
    else None. Training, classification and pretraining find catalogs through this."""
    path = Path(path)
    if path.is_file():
        return path if path.suffix.lower() in CATALOG_SUFFIXES else None
    if path.is_dir():
        for name in CATALOG_FILES:
            if (path / name).is_file():
                return path / name
    return None


# --- QuakeML -----------------------------------------------------------------------------------
def is_quakeml(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in QUAKEML_SUFFIXES


def preferred_origin(event: Event) -> Origin | None:
    """The preferred origin, else the first one, else None."""
    origin = event.preferred_origin()
    if origin is None and event.origins:
        origin = event.origins[0]
    return origin


def preferred_magnitude(event: Event) -> Magnitude | None:
    """The preferred magnitude, else the first one, else None."""
    magnitude = event.preferred_magnitude()
    if magnitude is None and event.magnitudes:
        magnitude = event.magnitudes[0]
    return magnitude


def is_reviewed(evaluation_mode: object, evaluation_status: object) -> bool:
    """True when the origin was set by an analyst: mode ``manual`` or status reviewed/final."""
    mode = str(evaluation_mode or "").strip().lower()
    status = str(evaluation_status or "").strip().lower()
    return mode == "manual" or status in REVIEWED_STATUSES


def first_p_picks(event: Event) -> dict[str, obspy.UTCDateTime]:
    """First P pick per station, keyed ``NET.STA.LOC`` and ``NET.STA`` (picks often lack a
    location); an absent location code is the empty one."""
    picks: dict[str, obspy.UTCDateTime] = {}
    for pick in event.picks:
        phase = str(pick.phase_hint or "").strip().upper()
        if not phase.startswith("P") or pick.time is None or pick.waveform_id is None:
            continue
        wid = pick.waveform_id
        net, sta, loc = wid.network_code or "", wid.station_code or "", wid.location_code or ""
        for key in (f"{net}.{sta}.{loc}", f"{net}.{sta}"):
            if key not in picks or pick.time < picks[key]:
                picks[key] = pick.time
    return picks


def _row_from_quakeml(event: Event, event_id: str) -> dict:
    origin = preferred_origin(event)
    magnitude = preferred_magnitude(event)
    mode = text_or_empty(origin.evaluation_mode) if origin is not None else ""
    status = text_or_empty(origin.evaluation_status) if origin is not None else ""
    return {
        "event_id": event_id,
        "origin_time": origin.time if origin is not None and origin.time is not None else None,
        "latitude": origin.latitude if origin is not None else None,
        "longitude": origin.longitude if origin is not None else None,
        "depth_km": origin.depth / 1000.0
        if origin is not None and origin.depth is not None
        else None,
        "magnitude": magnitude.mag if magnitude is not None else None,
        "magnitude_type": text_or_empty(magnitude.magnitude_type) if magnitude is not None else "",
        "event_type": str(event.event_type) if event.event_type else "",
        "evaluation_mode": mode,
        "evaluation_status": status,
        "reviewed": is_reviewed(mode, status),
        "p_picks": first_p_picks(event),
        "skip_reason": "",
    }


def _name_bad_quakeml_times(path: Path, catalog: Catalog, rows: list[dict]) -> None:
    """Give the skip reason to events whose origin obspy read without its time: obspy turns a
    time it cannot parse into None (with a warning that names no event), so the text is looked
    up in the file by the origin's publicID."""
    origins = [preferred_origin(event) for event in catalog]
    bad = [
        (row, o) for row, o in zip(rows, origins, strict=True) if o is not None and o.time is None
    ]
    if not bad:
        return
    from lxml import etree

    texts = {
        element.get("publicID"): element.findtext("{*}time/{*}value")
        for element in etree.parse(str(path)).iter("{*}origin")
    }
    for row, origin in bad:
        text = texts.get(str(origin.resource_id))
        row["skip_reason"] = f"bad origin time: {(text or '').strip()!r}"


def _read_quakeml(path: Path) -> Catalog:
    try:
        return obspy.read_events(str(path), format="QUAKEML")
    except Exception as exc:  # obspy raises many types for a malformed file
        raise ValueError(f"cannot read QuakeML catalog {path}: {_xml_error(path) or exc}") from exc


def _xml_error(path: Path) -> str | None:
    """The XML parser's own message (with line and column) when ``path`` is not well-formed XML;
    obspy's message would only say that it could not parse the file."""
    from lxml import etree

    try:
        etree.parse(str(path))
    except etree.XMLSyntaxError as err:
        return f"not well-formed XML: {err}"
    except OSError:
        return None
    return None


# --- CSV ---------------------------------------------------------------------------------------
#: What an origin time is expected to look like, for the warning about those that do not.
TIME_EXPECTED = "expected ISO 8601, e.g. 2019-02-08T17:41:10.54Z"


def _parse_time(value: object) -> tuple[obspy.UTCDateTime | None, str]:
    """The origin time of a CSV cell and "" , or None and the skip reason of a cell that is
    not a date-time (an empty cell is an unknown time, not a bad one)."""
    text = text_or_empty(value)
    if not text:
        return None, ""
    try:
        return obspy.UTCDateTime(text), ""
    except Exception:  # obspy raises several types for bad strings
        return None, f"bad origin time: {text!r}"


def _csv_column(columns: Iterable[str], field: str) -> str | None:
    """The CSV column that holds ``field``, or None."""
    candidates = ORIGIN_TIME_COLUMNS if field == "origin_time" else (field,)
    present = set(columns)
    return next((c for c in candidates if c in present), None)


def _check_required(table: pd.DataFrame, path: Path, require: Iterable[str]) -> None:
    for field in require:
        if _csv_column(table.columns, field) is not None:
            continue
        if field == "origin_time":
            raise ValueError(
                f"catalog {path} has no origin time column; expected one of "
                f"{list(ORIGIN_TIME_COLUMNS)}, got columns {list(table.columns)}"
            )
        raise ValueError(
            f"catalog {path} has no {field!r} column; got columns {list(table.columns)}"
        )


#: Rows of a CSV catalog parsed at a time into a compact table: the text of one chunk is all a
#: million-event catalog holds in memory as Python strings besides its event ids.
CSV_CHUNK_ROWS = 100_000


def _read_csv(
    path: Path, id_rule: str, require: tuple[str, ...], compact: bool = False
) -> pd.DataFrame:
    if id_rule in ("last-segment", "resource-id"):
        raise ValueError(
            f"id rule {id_rule!r} applies to QuakeML catalogs; a CSV catalog takes "
            "auto, column:NAME or regex:PATTERN"
        )
    try:
        header = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=0)
    except pd.errors.EmptyDataError:  # not even a header: no events
        return pd.DataFrame(columns=list(CATALOG_COLUMNS))
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read catalog {path}: {exc}") from exc
    id_column = id_rule[len("column:") :] if id_rule.startswith("column:") else "event_id"
    if id_column not in header.columns:
        raise ValueError(
            f"catalog {path} has no column {id_column!r} for event ids; "
            f"columns are {list(header.columns)}"
        )
    _check_required(header, path, require)
    time_column = _csv_column(header.columns, "origin_time")
    try:
        chunks = pd.read_csv(
            path, dtype=str, keep_default_na=False, chunksize=CSV_CHUNK_ROWS if compact else None
        )
        parts = [
            _csv_events(chunk, id_column, id_rule, time_column, compact)
            for chunk in (chunks if compact else [chunks])
        ]
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read catalog {path}: {exc}") from exc
    return _concat_compact(parts) if compact else parts[0]


def _csv_events(
    table: pd.DataFrame, id_column: str, id_rule: str, time_column: str | None, compact: bool
) -> pd.DataFrame:
    """The event table of CSV rows, built one column at a time."""
    n = len(table)

    def text(name: str) -> list[str]:
        return [text_or_empty(v) for v in table[name]] if name in table else [""] * n

    def number(name: str) -> list[float | None]:
        return [float_or_none(v) for v in table[name]] if name in table else [None] * n

    event_ids = text(id_column)
    if id_rule.startswith("regex:"):
        event_ids = [_apply_regex(id_rule[len("regex:") :], e) for e in event_ids]
    mode, status = text("evaluation_mode"), text("evaluation_status")
    parsed = [_parse_time(v) for v in table[time_column]] if time_column else [(None, "")] * n
    times = [time for time, _ in parsed]
    columns = {
        "event_id": event_ids,
        "origin_time": _as_datetime64(times) if compact else times,
        "latitude": number("latitude"),
        "longitude": number("longitude"),
        "depth_km": number("depth_km"),
        "magnitude": number("magnitude"),
        "magnitude_type": text("magnitude_type"),
        "event_type": text("event_type"),
        "evaluation_mode": mode,
        "evaluation_status": status,
        "reviewed": [is_reviewed(m, s) for m, s in zip(mode, status, strict=True)],
        "p_picks": [None] * n if compact else [{} for _ in range(n)],
        "skip_reason": [reason for _, reason in parsed],
    }
    events = pd.DataFrame(columns, columns=list(CATALOG_COLUMNS))
    return compact_table(events) if compact else events


# --- compact tables ----------------------------------------------------------------------------
NUMBER_COLUMNS = ("latitude", "longitude", "depth_km", "magnitude")
TEXT_COLUMNS = (
    "magnitude_type",
    "event_type",
    "evaluation_mode",
    "evaluation_status",
    "skip_reason",
)


def _as_datetime64(times: list) -> pd.Series | list:
    """UTCDateTimes (or None) as datetime64[ns]; the list itself when a time lies outside
    datetime64's years 1677-2262 (then the column keeps its UTCDateTimes)."""
    nat = np.iinfo(np.int64).min
    ns = [nat if t is None else t.ns for t in times]
    if any(v != nat and not nat < v <= np.iinfo(np.int64).max for v in ns):
        return times
    return pd.Series(np.array(ns, dtype=np.int64).view("datetime64[ns]"))


def compact_table(events: pd.DataFrame) -> pd.DataFrame:
    """The same events without a Python object per event where a column allows it (see
    :data:`CATALOG_COLUMNS`): what a catalog of millions of events can hold in memory."""
    events = events.copy()
    if events["origin_time"].dtype == object:
        events["origin_time"] = _as_datetime64(list(events["origin_time"]))
    for name in NUMBER_COLUMNS:
        events[name] = events[name].astype(np.float64)
    for name in TEXT_COLUMNS:
        events[name] = events[name].astype("category")
    events["p_picks"] = [p if p else None for p in events["p_picks"]]
    return events


def _concat_compact(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Compact tables one after the other, the categoricals joined (not turned into text)."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return compact_table(pd.DataFrame(columns=list(CATALOG_COLUMNS)))
    events = pd.concat(parts, ignore_index=True)
    for name in TEXT_COLUMNS:
        events[name] = union_categoricals([p[name] for p in parts])
    return events


# --- the table ---------------------------------------------------------------------------------
def _check_ids(events: pd.DataFrame, path: Path | str) -> None:
    empty = int((events["event_id"] == "").sum())
    if empty:
        raise ValueError(
            f"catalog {path}: {empty} event(s) have an empty event id; choose another id rule"
        )
    duplicated = events["event_id"][events["event_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(
            f"catalog {path}: event ids are not unique under this id rule: {duplicated[:5]} "
            f"({len(duplicated)} duplicated); choose another id rule (e.g. resource-id)"
        )


def _warn_unusable(events: pd.DataFrame, path: Path) -> None:
    """One warning that names every event the catalog gives no usable origin for (its id and
    the value), so that all of them can be mended at once."""
    reasons = events["skip_reason"].astype(str)
    bad = events.loc[reasons != "", "event_id"]
    if len(bad):
        named = ", ".join(f"{e} ({r})" for e, r in zip(bad, reasons[reasons != ""], strict=True))
        logger.warning(
            "catalog %s: %d event(s) will be skipped: %s; %s", path, len(bad), named, TIME_EXPECTED
        )


def _read(
    path: str | os.PathLike | Catalog, id_rule: str, require: Iterable[str], compact: bool = False
) -> tuple[pd.DataFrame, Catalog | None]:
    """The event table, and the obspy Catalog when the file is QuakeML (None for a CSV); an
    obspy Catalog in memory is read as its QuakeML would be."""
    check_id_rule(id_rule)
    require = tuple(require)
    unknown = [f for f in require if f not in CSV_FIELDS]
    if unknown:
        raise ValueError(f"cannot require {unknown}; expected some of {list(CSV_FIELDS)}")
    if isinstance(path, Catalog):
        rows = [_row_from_quakeml(ev, quakeml_event_id(ev, id_rule)) for ev in path]
        events = pd.DataFrame(rows, columns=list(CATALOG_COLUMNS))
        _check_ids(events, "(obspy Catalog)")
        return (compact_table(events) if compact else events), path
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"catalog {path} does not exist")
    catalog = None
    if is_quakeml(path):
        catalog = _read_quakeml(path)
        rows = [_row_from_quakeml(ev, quakeml_event_id(ev, id_rule)) for ev in catalog]
        _name_bad_quakeml_times(path, catalog, rows)
        events = pd.DataFrame(rows, columns=list(CATALOG_COLUMNS))
    elif path.suffix.lower() == ".csv":
        events = _read_csv(path, id_rule, require, compact)
    else:
        raise ValueError(
            f"catalog {path}: unknown format {path.suffix!r}; expected one of "
            f"{', '.join(CATALOG_SUFFIXES)}"
        )
    _check_ids(events, path)
    _warn_unusable(events, path)
    if compact and catalog is not None:
        events = compact_table(events)
    logger.info(
        "catalog %s: %d events (%d reviewed)", path, len(events), int(events["reviewed"].sum())
    )
    return events, catalog


def read_catalog(
    path: str | os.PathLike | Catalog,
    id_rule: str = "auto",
    *,
    require: Iterable[str] = (),
    compact: bool = False,
) -> pd.DataFrame:
    """Read a QuakeML or CSV catalog into one row per event (:data:`CATALOG_COLUMNS`).

    ``id_rule``: see :data:`ID_RULES`; the ids must come out non-empty and unique (ValueError).
    ``require``: fields of :data:`CSV_FIELDS` a CSV catalog must have a column for
    (``event_type`` for labels, ``origin_time`` to find waveforms). A CSV file with no header at
    all gives an empty table. ``reviewed`` is True when the (preferred) origin's evaluation mode
    is manual or its status reviewed/final. An unreadable file is a ValueError naming it.
    ``compact``: the compact table of :data:`CATALOG_COLUMNS` (a CSV read in chunks of
    :data:`CSV_CHUNK_ROWS` rows; a QuakeML file's obspy Catalog is not kept).
    """
    return _read(path, id_rule, require, compact)[0]


def read_catalog_with_events(
    path: str | os.PathLike | Catalog, id_rule: str = "auto", *, require: Iterable[str] = ()
) -> tuple[pd.DataFrame, Catalog]:
    """:func:`read_catalog` plus the obspy Catalog in the same order (to annotate and write).

    For a CSV catalog the obspy Catalog is built from the table (:func:`events_to_obspy`).
    """
    events, catalog = _read(path, id_rule, require)
    return events, catalog if catalog is not None else events_to_obspy(events)


def events_to_obspy(events: pd.DataFrame) -> Catalog:
    """Build obspy Events from a catalog table (CSV catalogs), so they can be written as QuakeML.

    A type that is a class name becomes its QuakeML event type (``noise`` -> ``not existing``,
    :func:`quake.classes.class_to_event_type`).

    Resource ids are ``smi:local/event/<event_id>``, so the ``auto`` id rule gives the ids back.
    """
    catalog = Catalog(resource_id=ResourceIdentifier("smi:local/quake/catalog"))
    for row in events.itertuples(index=False):
        event = Event(resource_id=ResourceIdentifier(f"smi:local/event/{row.event_id}"))
        event_type = class_to_event_type(text_or_empty(row.event_type))
        if event_type in EventType.values():
            event.event_type = event_type
        elif event_type:
            logger.warning(
                "event %s: event type %r is not a QuakeML type; left unset",
                row.event_id,
                event_type,
            )
        depth_km = float_or_none(row.depth_km)
        if row.origin_time is not None:
            origin = Origin(
                time=row.origin_time,
                latitude=float_or_none(row.latitude),
                longitude=float_or_none(row.longitude),
                depth=depth_km * 1000.0 if depth_km is not None else None,
                evaluation_mode=text_or_empty(row.evaluation_mode) or None,
                evaluation_status=text_or_empty(row.evaluation_status) or None,
            )
            event.origins.append(origin)
            event.preferred_origin_id = origin.resource_id
        magnitude_value = float_or_none(row.magnitude)
        if magnitude_value is not None:
            magnitude = Magnitude(mag=magnitude_value)
            event.magnitudes.append(magnitude)
            event.preferred_magnitude_id = magnitude.resource_id
        catalog.events.append(event)
    return catalog
