"""Events from stations: detections at several stations close in time become one event.

Association: the detections (:mod:`quake.annotate.detect`) are taken in the order of their
``onset``; an event starts at the first one not yet used and takes every detection whose onset
is at most ``tolerance_s`` after that first onset. It is an event when at least
``min_stations`` different stations are among them; otherwise its detections stay station
detections only. A station with several detections in one event (two classes, or a P and a
later S trigger) votes once, with its most probable detection (``max_prob``).

Classification: the same station-to-event rule as ``quake classify``
(:func:`quake.probabilities.combine_station_probabilities` over the stations' ``prob_<class>``:
the probabilities of each station's window, :mod:`quake.annotate.detect`), and the class by the
model's decision thresholds (:func:`quake.probabilities.decide`).

Defaults: 2 stations within 30 s. 30 s is the spread of first arrivals across a regional
network (P at 6-8 km/s crosses 200 km in about 30 s) plus the onset's own uncertainty (a
probability detection knows its onset to one stride); events closer together than that on
the same stations are merged into one.

Outputs: a table (:func:`event_columns`: ``event_id``, ``time``, ``class``, ``n_stations``,
``prob_<class>`` per class, ``stations`` and their ``onsets``) and,
for a path ending in ``.xml``, QuakeML (:func:`events_catalog`) that opens in obspy as a catalog.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import obspy
import pandas as pd
from obspy.core.event import (
    Catalog,
    Comment,
    CreationInfo,
    Event,
    Origin,
    Pick,
    ResourceIdentifier,
    WaveformStreamID,
)

from quake.classes import class_to_event_type
from quake.classify.catalog import KNOWN_PROBABILITY, prediction_comment
from quake.probabilities import combine_station_probabilities, decide, prob_column
from quake.runtime import write_atomic

#: Default least number of stations that make an event.
DEFAULT_MIN_STATIONS = 2
#: Default time tolerance (seconds) of the onsets of one event (module docstring).
DEFAULT_TOLERANCE_S = 30.0
#: The columns of the events table before its ``prob_<class>`` columns.
EVENT_COLUMNS_HEAD = ["event_id", "time", "class", "n_stations"]


def event_columns(class_names: Sequence[str]) -> list[str]:
    """:data:`EVENT_COLUMNS_HEAD`, ``prob_<class>`` per class, then ``stations`` and their
    ``onsets``."""
    return EVENT_COLUMNS_HEAD + [prob_column(c) for c in class_names] + ["stations", "onsets"]


def check_association(min_stations: int, tolerance_s: float) -> None:
    """A ValueError naming a bad ``min_stations`` or ``tolerance_s``."""
    if isinstance(min_stations, bool) or not isinstance(min_stations, int) or min_stations < 1:
        raise ValueError(f"min_stations must be a whole number >= 1, got {min_stations!r}")
    if (
        isinstance(tolerance_s, bool)
        or not isinstance(tolerance_s, (int, float))
        or not np.isfinite(tolerance_s)
        or tolerance_s < 0
    ):
        raise ValueError(f"tolerance must be a number of seconds >= 0, got {tolerance_s!r}")


def event_id(time: obspy.UTCDateTime) -> str:
    """``quake-20040929T003415.12``: the id of an event whose first onset is ``time``."""
    return "quake-" + time.strftime("%Y%m%dT%H%M%S.%f")[:-4]


def associate(
    table: pd.DataFrame,
    class_names: Sequence[str],
    decision_thresholds: np.ndarray | None = None,
    *,
    min_stations: int = DEFAULT_MIN_STATIONS,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> pd.DataFrame:
    """The events of a detections table (module docstring): one row per event,
    :func:`event_columns`, sorted by time; ``time`` is the earliest onset, ``stations`` the
    voting stations (``NET.STA.LOC``, ``;``-joined, by onset)."""
    check_association(min_stations, tolerance_s)
    names = list(class_names)
    columns = [prob_column(c) for c in names]
    missing = [c for c in ["station", "onset", "max_prob", *columns] if c not in table.columns]
    if missing:
        raise ValueError(f"detections table lacks the columns {missing}; expected those of "
                         "quake.annotate.detect.detection_columns")  # fmt: skip
    rows = []
    if len(table):
        onsets = np.array([obspy.UTCDateTime(t).timestamp for t in table["onset"]])
        order = np.argsort(onsets, kind="stable")
        first = 0
        while first < len(order):
            last = first
            while (
                last + 1 < len(order)
                and onsets[order[last + 1]] - onsets[order[first]] <= tolerance_s
            ):
                last += 1
            members = table.iloc[order[first : last + 1]]
            best = members.sort_values("max_prob", ascending=False, kind="stable")
            voters = best.drop_duplicates("station").sort_values("onset", kind="stable")
            if len(voters) >= min_stations:
                rows.append(_event_row(voters, names, columns, decision_thresholds))
            first = last + 1
    return pd.DataFrame(rows, columns=event_columns(names))


def _event_row(voters: pd.DataFrame, names, columns, decision_thresholds) -> dict:
    station_probs = voters[columns].to_numpy(dtype=np.float64)
    probs = combine_station_probabilities(station_probs)
    decided = names[int(decide(probs[None], decision_thresholds)[0])]
    time = min(obspy.UTCDateTime(t) for t in voters["onset"])
    return {
        "event_id": event_id(time),
        "time": str(time),
        "class": decided,
        "n_stations": len(voters),
        **{c: float(p) for c, p in zip(columns, probs, strict=True)},
        "stations": ";".join(voters["station"]),
        "onsets": ";".join(str(obspy.UTCDateTime(t)) for t in voters["onset"]),
    }


def events_catalog(events: pd.DataFrame, class_names: Sequence[str], model_id: str) -> Catalog:
    """The events as an obspy Catalog: ``event_type`` from the class
    (:func:`quake.classes.class_to_event_type`), ``event_type_certainty`` as ``quake classify``
    sets it, an automatic origin at the first onset (no location: its latitude and longitude
    are empty), an automatic pick per station at its onset, and the probabilities in a comment
    written as ``quake classify`` writes them (:func:`quake.classify.catalog.prediction_comment`)."""
    columns = [prob_column(c) for c in class_names]
    catalog = Catalog(
        creation_info=CreationInfo(agency_id="quake", author=f"quake model {model_id}")
    )
    for row in events.to_dict("records"):
        base = f"smi:local/quake/{row['event_id']}"
        info = CreationInfo(agency_id="quake", author=f"quake model {model_id}")
        picks = []
        stations, onsets = str(row["stations"]).split(";"), str(row["onsets"]).split(";")
        for station, onset in zip(stations, onsets, strict=True):
            net, sta, loc = station.split(".")
            picks.append(Pick(
                resource_id=ResourceIdentifier(f"{base}/pick/{station}"),
                time=obspy.UTCDateTime(onset),
                waveform_id=WaveformStreamID(net, sta, loc or None),
                evaluation_mode="automatic", creation_info=info,
            ))  # fmt: skip
        origin = Origin(
            resource_id=ResourceIdentifier(f"{base}/origin"),
            time=obspy.UTCDateTime(row["time"]),
            evaluation_mode="automatic",
            evaluation_status="preliminary",
            comments=[Comment(text="time of the first station's onset; not located")],
            creation_info=info,
        )
        comment = prediction_comment(
            {**row, "predicted_class": row["class"], "n_stations_used": row["n_stations"],
             "n_stations_skipped": 0},
            class_names, model_id, columns,
        )  # fmt: skip
        top = max(float(row[c]) for c in columns)
        catalog.append(Event(
            resource_id=ResourceIdentifier(base),
            event_type=class_to_event_type(row["class"]),
            event_type_certainty="known" if top >= KNOWN_PROBABILITY else "suspected",
            origins=[origin], preferred_origin_id=origin.resource_id, picks=picks,
            comments=[Comment(
                text=f"{comment}; detected at {row['stations']}",
                resource_id=ResourceIdentifier(f"{base}/comment"), creation_info=info,
            )],
            creation_info=info,
        ))  # fmt: skip
    return catalog


def write_events(
    events: pd.DataFrame, path: str | Path, class_names: Sequence[str], model_id: str
) -> None:
    """``path`` atomically: QuakeML when it ends in ``.xml`` (:func:`events_catalog`), else
    the table as CSV."""
    path = Path(path)
    if path.suffix.lower() == ".xml":
        catalog = events_catalog(events, class_names, model_id)
        write_atomic(path, lambda tmp: catalog.write(str(tmp), format="QUAKEML"))
    else:
        write_atomic(path, lambda tmp: events.to_csv(tmp, index=False, float_format="%.6g"))
