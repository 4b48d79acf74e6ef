"""One event held in an obspy Stream -> its class probabilities, station by station.

The same steps as a catalog run (:mod:`quake.classify.run`): the stream is split by station,
every station is windowed by :func:`~quake.classify.windows.prepare_event` (band choice,
quality checks, TRIMMING at the P pick or origin time), the model scores the windows and the
station probabilities are combined by :func:`~quake.probabilities.combine_station_probabilities`.
So ``clf.classify(stream)`` gives what ``quake classify`` writes for the same event, and holds
it against the model card as a catalog run does (:mod:`quake.classify.card_check`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import obspy
import pandas as pd

from quake.classify.card_check import CardCheck
from quake.classify.tables import STATION_COLUMNS_HEAD, station_rows
from quake.classify.windows import prepare_event
from quake.data.sources import EventRequest, StreamSource
from quake.probabilities import combine_station_probabilities, decide, prob_column


@dataclass
class EventResult:
    """What ``classify`` found for one event.

    ``probabilities``: class -> probability of the event (None when no station was usable);
    ``predicted_class``: the class the model's decision thresholds give (None likewise); ``stations``: one row per
    station, the columns of ``--stations-out`` (``station_id``, ``status`` used/skipped,
    ``reason`` and ``detail`` of a skip, ``quality``, ``channels``, ``sampling_rate_hz``, and
    ``prob_<class>`` for the stations used); ``in_training``: whether the model card lists the
    event (given by its ``event_id``) among the training events, None when no id was given or
    the model has no card; ``card_check``: what differs from training, counted as in a catalog
    run's summary (:meth:`quake.classify.card_check.CardCounts.to_dict`).
    """

    probabilities: dict[str, float] | None
    predicted_class: str | None
    stations: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)  # station or "event" -> reason
    in_training: bool | None = None
    card_check: dict = field(default_factory=dict)


def p_picks_of(picks: Mapping[str, obspy.UTCDateTime] | Iterable | None) -> dict:
    """``{station id: P time}`` from a mapping (``NET.STA.LOC`` or ``NET.STA`` keys) or from
    obspy ``Pick`` objects (those with a P phase hint, or none)."""
    if picks is None:
        return {}
    if isinstance(picks, Mapping):
        return {str(k): obspy.UTCDateTime(v) for k, v in picks.items()}
    found = {}
    for pick in picks:
        hint = (pick.phase_hint or "P").upper()
        if hint.startswith("P"):
            wid = pick.waveform_id
            found[f"{wid.network_code}.{wid.station_code}.{wid.location_code or ''}"] = pick.time
    return found


def classify_stream(
    classifier,
    stream: obspy.Stream,
    origin_time: obspy.UTCDateTime | str | None = None,
    picks: Mapping | Iterable | None = None,
    batch_size: int = 128,
    event_id: str | None = None,
) -> EventResult:
    """:class:`EventResult` of one event's ``stream`` (module docstring). Windows start at each
    station's P pick, else at the origin time, ``pre_arrival_s`` earlier, as in training.
    ``event_id``, where known, is compared with the model card's training events."""
    if not isinstance(stream, obspy.Stream):
        raise ValueError(f"expected an obspy Stream of one event's stations, got {type(stream)}")
    origin = obspy.UTCDateTime(origin_time) if origin_time is not None else None
    config = classifier.config
    request = EventRequest("event" if event_id is None else str(event_id), origin)
    prepared = prepare_event(StreamSource(stream), request, p_picks_of(picks), config)
    card = CardCheck.of(classifier)
    in_training = card.mark_events([event_id])[0] if event_id is not None else None
    card.add(prepared, named=event_id is not None)
    card.say()
    checked = {"in_training": in_training, "card_check": card.counts.to_dict()}
    class_names = list(classifier.class_names)
    station_probs = (
        prepared.station_probabilities(
            classifier.predict_proba(prepared.windows, batch_size=batch_size)
        )
        if len(prepared.windows)
        else np.zeros((0, len(class_names)))
    )
    stations = pd.DataFrame(
        station_rows(prepared, station_probs, class_names),
        columns=STATION_COLUMNS_HEAD + [prob_column(c) for c in class_names],
    ).drop(columns="event_id")
    numeric = ["sampling_rate_hz"] + [prob_column(c) for c in class_names]
    stations[numeric] = stations[numeric].replace("", np.nan).astype(float)
    skipped = {s.station_id: s.detail or s.reason for s in prepared.stations if not s.used}
    if prepared.event_reason:
        skipped["event"] = prepared.event_reason
    if not len(station_probs):
        return EventResult(None, None, stations, skipped, **checked)
    event = combine_station_probabilities(station_probs)
    probabilities = {name: float(p) for name, p in zip(class_names, event, strict=True)}
    decided = class_names[int(decide(event, classifier.decision_thresholds))]
    return EventResult(probabilities, decided, stations, skipped, **checked)
