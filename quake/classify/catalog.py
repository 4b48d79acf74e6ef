"""Event catalogs in and out: QuakeML or CSV -> one table of events, predictions -> QuakeML.

One row per catalog event, in catalog order, keyed by an event id that names the event's
waveform folder. The id rule is explicit (:data:`ID_RULES`), so the same catalog always gives
the same ids, and the annotated QuakeML can be matched back to the predictions.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import obspy
import pandas as pd
from obspy.core.event import (
    Catalog,
    Comment,
    CreationInfo,
    Event,
    Magnitude,
    Origin,
    ResourceIdentifier,
)
from obspy.core.event.header import EventType

from quake.classes import NOISE
from quake.data.readers.catalog import ORIGIN_TIME_COLUMNS, event_id_from_resource_id

logger = logging.getLogger(__name__)

#: How event ids are made. ``auto``: the ``event_id`` column of a CSV, the last path segment of
#: a QuakeML event's resource id (``smi:uw.anss.org/event/uw61348817`` -> ``uw61348817``;
#: the data reader's rule, ``quake.data.readers.catalog.event_id_from_resource_id``).
#: ``last-segment`` / ``resource-id``: that segment / the whole resource id (QuakeML).
#: ``column:NAME``: a CSV column. ``regex:PATTERN``: the first group (or the whole match) of
#: PATTERN searched in the resource id (QuakeML) or in the ``event_id`` column (CSV).
ID_RULES = ("auto", "last-segment", "resource-id", "column:NAME", "regex:PATTERN")

#: Evaluation statuses that mark an analyst-reviewed origin.
REVIEWED_STATUSES = ("reviewed", "final")

#: The QuakeML event type written for the class ``noise`` (no seismic event happened).
NOISE_EVENT_TYPE = "not existing"

CATALOG_COLUMNS = (
    "event_id",
    "origin_time",
    "latitude",
    "longitude",
    "depth_km",
    "magnitude",
    "event_type",
    "evaluation_mode",
    "evaluation_status",
    "reviewed",
    "p_picks",
)

_QUAKEML_SUFFIXES = (".xml", ".quakeml", ".qml")


def _check_id_rule(id_rule: str) -> None:
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
    _check_id_rule(id_rule)
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


def is_quakeml(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in _QUAKEML_SUFFIXES


def _preferred_origin(event: Event) -> Origin | None:
    origin = event.preferred_origin()
    if origin is None and event.origins:
        origin = event.origins[0]
    return origin


def _preferred_magnitude(event: Event) -> Magnitude | None:
    magnitude = event.preferred_magnitude()
    if magnitude is None and event.magnitudes:
        magnitude = event.magnitudes[0]
    return magnitude


def is_reviewed(evaluation_mode: object, evaluation_status: object) -> bool:
    """True when the origin was set by an analyst: mode ``manual`` or status reviewed/final."""
    mode = str(evaluation_mode or "").strip().lower()
    status = str(evaluation_status or "").strip().lower()
    return mode == "manual" or status in REVIEWED_STATUSES


def _p_picks(event: Event) -> dict[str, obspy.UTCDateTime]:
    """First P pick per station, keyed ``NET.STA.LOC`` and ``NET.STA`` (picks often lack a location)."""
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
    origin = _preferred_origin(event)
    magnitude = _preferred_magnitude(event)
    mode = str(origin.evaluation_mode) if origin is not None and origin.evaluation_mode else ""
    status = (
        str(origin.evaluation_status) if origin is not None and origin.evaluation_status else ""
    )
    return {
        "event_id": event_id,
        "origin_time": origin.time if origin is not None and origin.time is not None else None,
        "latitude": origin.latitude if origin is not None else None,
        "longitude": origin.longitude if origin is not None else None,
        "depth_km": origin.depth / 1000.0
        if origin is not None and origin.depth is not None
        else None,
        "magnitude": magnitude.mag if magnitude is not None else None,
        "event_type": str(event.event_type) if event.event_type else "",
        "evaluation_mode": mode,
        "evaluation_status": status,
        "reviewed": is_reviewed(mode, status),
        "p_picks": _p_picks(event),
    }


def _parse_time(value: object, event_id: str) -> obspy.UTCDateTime | None:
    if (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or str(value).strip() == ""
    ):
        return None
    try:
        return obspy.UTCDateTime(str(value))
    except Exception as err:  # obspy raises several types for bad strings
        raise ValueError(
            f"event {event_id!r}: origin time {value!r} is not a date-time; expected ISO 8601, "
            "e.g. 2019-02-08T17:41:10.54Z"
        ) from err


def _float_or_none(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _read_csv_catalog(path: Path, id_rule: str) -> pd.DataFrame:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    id_column = "event_id"
    if id_rule.startswith("column:"):
        id_column = id_rule[len("column:") :]
    elif id_rule in ("last-segment", "resource-id"):
        raise ValueError(
            f"id rule {id_rule!r} applies to QuakeML catalogs; a CSV catalog takes "
            "auto, column:NAME or regex:PATTERN"
        )
    if id_column not in table.columns:
        raise ValueError(
            f"{path}: no column {id_column!r} for event ids; columns are {list(table.columns)}"
        )
    time_column = next((c for c in ORIGIN_TIME_COLUMNS if c in table.columns), None)
    if time_column is None:
        raise ValueError(
            f"{path}: no origin time column; expected one of {ORIGIN_TIME_COLUMNS}, "
            f"got columns {list(table.columns)}"
        )
    depth_column = "depth_km" if "depth_km" in table.columns else None
    rows = []
    for record in table.to_dict("records"):
        event_id = _text(record[id_column])
        if id_rule.startswith("regex:"):
            event_id = _apply_regex(id_rule[len("regex:") :], event_id)
        mode = _text(record.get("evaluation_mode"))
        status = _text(record.get("evaluation_status"))
        rows.append(
            {
                "event_id": event_id,
                "origin_time": _parse_time(record[time_column], event_id),
                "latitude": _float_or_none(record.get("latitude")),
                "longitude": _float_or_none(record.get("longitude")),
                "depth_km": _float_or_none(record.get(depth_column)) if depth_column else None,
                "magnitude": _float_or_none(record.get("magnitude")),
                "event_type": _text(record.get("event_type")),
                "evaluation_mode": mode,
                "evaluation_status": status,
                "reviewed": is_reviewed(mode, status),
                "p_picks": {},
            }
        )
    return pd.DataFrame(rows, columns=list(CATALOG_COLUMNS))


def _check_ids(events: pd.DataFrame, path: Path) -> None:
    empty = int((events["event_id"] == "").sum())
    if empty:
        raise ValueError(
            f"{path}: {empty} event(s) have an empty event id; choose another --id-rule"
        )
    duplicated = events["event_id"][events["event_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(
            f"{path}: event ids are not unique under this id rule: {duplicated[:5]} "
            f"({len(duplicated)} duplicated); choose another --id-rule (e.g. resource-id)"
        )


def read_catalog_with_events(
    path: str | os.PathLike, id_rule: str = "auto"
) -> tuple[pd.DataFrame, Catalog]:
    """Read a QuakeML or CSV catalog -> (event table, obspy Catalog in the same order).

    The table has :data:`CATALOG_COLUMNS`: ``origin_time`` is an ``obspy.UTCDateTime`` or None,
    ``p_picks`` a dict ``NET.STA[.LOC]`` -> first P pick time (QuakeML only), ``reviewed`` True
    when the preferred origin's evaluation mode is manual or its status reviewed/final. For a
    CSV catalog the obspy Catalog is built from the table (resource ids ``smi:local/event/<id>``).
    """
    path = Path(path)
    _check_id_rule(id_rule)
    if not path.is_file():
        raise FileNotFoundError(f"catalog {path} does not exist")
    if is_quakeml(path):
        catalog = obspy.read_events(str(path))
        rows = [_row_from_quakeml(ev, quakeml_event_id(ev, id_rule)) for ev in catalog]
        events = pd.DataFrame(rows, columns=list(CATALOG_COLUMNS))
    elif path.suffix.lower() == ".csv":
        events = _read_csv_catalog(path, id_rule)
        catalog = events_to_obspy(events)
    else:
        raise ValueError(
            f"catalog {path}: unknown format {path.suffix!r}; expected .xml/.quakeml/.qml or .csv"
        )
    _check_ids(events, path)
    logger.info(
        "catalog %s: %d events (%d reviewed)", path, len(events), int(events["reviewed"].sum())
    )
    return events, catalog


def read_catalog(path: str | os.PathLike, id_rule: str = "auto") -> pd.DataFrame:
    """Read a QuakeML or CSV catalog into one table row per event (see :func:`read_catalog_with_events`)."""
    return read_catalog_with_events(path, id_rule)[0]


def events_to_obspy(events: pd.DataFrame) -> Catalog:
    """Build obspy Events from a catalog table (CSV catalogs), so they can be written as QuakeML."""
    catalog = Catalog(resource_id=ResourceIdentifier("smi:local/quake/catalog"))
    for row in events.itertuples(index=False):
        event = Event(resource_id=ResourceIdentifier(f"smi:local/event/{row.event_id}"))
        event_type = _text(row.event_type)
        if event_type in EventType.values():
            event.event_type = event_type
        elif event_type:
            logger.warning(
                "event %s: event type %r is not a QuakeML type; left unset",
                row.event_id,
                event_type,
            )
        depth_km = _float_or_none(row.depth_km)
        if row.origin_time is not None:
            origin = Origin(
                time=row.origin_time,
                latitude=_float_or_none(row.latitude),
                longitude=_float_or_none(row.longitude),
                depth=depth_km * 1000.0 if depth_km is not None else None,
                evaluation_mode=_text(row.evaluation_mode) or None,
                evaluation_status=_text(row.evaluation_status) or None,
            )
            event.origins.append(origin)
            event.preferred_origin_id = origin.resource_id
        magnitude_value = _float_or_none(row.magnitude)
        if magnitude_value is not None:
            magnitude = Magnitude(mag=magnitude_value)
            event.magnitudes.append(magnitude)
            event.preferred_magnitude_id = magnitude.resource_id
        catalog.events.append(event)
    return catalog


def class_to_event_type(class_name: str) -> str:
    """QuakeML event type for a class name: itself, except ``noise`` -> ``not existing``."""
    return NOISE_EVENT_TYPE if class_name == NOISE else class_name


def prediction_comment(
    row: dict, class_names: Sequence[str], model_id: str, prob_columns: Sequence[str]
) -> str:
    """The text of the QuakeML comment for one prediction row."""
    if not _text(row.get("predicted_class")):
        reasons = _text(row.get("skip_reasons")) or "no waveform"
        return f"quake model {model_id}: not classified (no usable waveform: {reasons})"
    probs = ", ".join(
        f"{name}={float(row[col]):.4f}" for name, col in zip(class_names, prob_columns, strict=True)
    )
    return (
        f"quake model {model_id}: predicted {row['predicted_class']}; probabilities {probs}; "
        f"stations used {int(row['n_stations_used'])}, skipped {int(row['n_stations_skipped'])}"
    )


def annotate_catalog(
    catalog: Catalog,
    event_ids: Sequence[str],
    predictions: pd.DataFrame,
    class_names: Sequence[str],
    prob_columns: Sequence[str],
    model_id: str,
    *,
    overwrite_reviewed: bool = False,
) -> dict[str, int]:
    """Write predictions into ``catalog`` in place; returns counts (set, kept_reviewed, unclassified).

    A classified event gets ``event_type`` = the predicted class (``noise`` -> ``not existing``),
    ``event_type_certainty`` = ``suspected`` and a comment with the probabilities and model id.
    An analyst-reviewed event (preferred origin manual, or reviewed/final) keeps its type unless
    ``overwrite_reviewed``; it still gets the comment. An event without a usable waveform keeps
    its type and gets a comment saying why.
    """
    if len(event_ids) != len(catalog):
        raise ValueError(f"{len(event_ids)} event ids for a catalog of {len(catalog)} events")
    by_id = predictions.set_index("event_id", drop=False)
    counts = {"set": 0, "kept_reviewed": 0, "unclassified": 0, "missing": 0}
    for event, event_id in zip(catalog, event_ids, strict=True):
        if event_id not in by_id.index:
            counts["missing"] += 1
            logger.warning("event %s has no prediction row; QuakeML left unchanged", event_id)
            continue
        row = by_id.loc[event_id].to_dict()
        event.comments.append(
            Comment(
                text=prediction_comment(row, class_names, model_id, prob_columns),
                resource_id=ResourceIdentifier(f"smi:local/quake/{model_id}/{event_id}"),
                creation_info=CreationInfo(agency_id="quake", author=f"quake model {model_id}"),
            )
        )
        predicted = _text(row.get("predicted_class"))
        if not predicted:
            counts["unclassified"] += 1
            continue
        origin = _preferred_origin(event)
        reviewed = origin is not None and is_reviewed(
            origin.evaluation_mode, origin.evaluation_status
        )
        if reviewed and not overwrite_reviewed:
            counts["kept_reviewed"] += 1
            continue
        event.event_type = class_to_event_type(predicted)
        event.event_type_certainty = "suspected"
        counts["set"] += 1
    return counts


def write_quakeml(catalog: Catalog, path: str | os.PathLike) -> None:
    """Write QuakeML atomically (temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        catalog.write(str(tmp), format="QUAKEML")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def format_time(value: obspy.UTCDateTime | None) -> str:
    """ISO 8601 with a Z, or "" when unknown (the CSV's origin_time column)."""
    if value is None:
        return ""
    return value.isoformat() + "Z"
