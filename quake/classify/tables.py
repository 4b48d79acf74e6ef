"""The tables a catalog classification writes: the columns of ``predictions.csv`` and of
``--stations-out``, one event's rows, the review rule, and the summary of a run.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from quake.classify.card_check import CardCounts
from quake.classify.catalog import format_time
from quake.classify.windows import PreparedEvent
from quake.probabilities import decide, prob_column
from quake.runtime import (
    write_atomic,
)

STATION_COLUMNS_HEAD = [
    "event_id",
    "station_id",
    "status",
    "reason",
    "detail",
    "quality",
    "channels",
    "sampling_rate_hz",
]


def prediction_columns(class_names: Sequence[str]) -> list[str]:
    return (
        ["event_id", "origin_time", "predicted_class"]
        + [prob_column(c) for c in class_names]
        + ["review", "n_stations_used", "n_stations_skipped", "skip_reasons", "in_training"]
        + ["model_id"]
    )


def review_reason(row: dict[str, str], class_names: Sequence[str], min_probability: float) -> str:
    """Why a classified event is left to an analyst (the ``review`` column): its predicted class
    is less probable than ``min_probability``; empty otherwise. Computed from the row's own
    probabilities, so rows kept from an earlier run follow this run's threshold."""
    if not row.get("predicted_class"):
        return ""
    chosen = float(row[prob_column(row["predicted_class"])])
    if chosen >= min_probability:
        return ""
    return f"probability {chosen:.3f} below --min-probability {min_probability:g}"


def check_min_probability(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"--min-probability {value!r}: expected a probability in [0, 1]")
    return float(value)


@dataclass
class ClassifySummary:
    """What a run did: counts, skip reasons and where the time went."""

    n_events: int = 0
    n_resumed: int = 0
    n_classified: int = 0
    n_unclassified: int = 0
    n_for_review: int = 0
    n_windows: int = 0
    skip_counts: Counter = field(default_factory=Counter)
    quality_counts: Counter = field(default_factory=Counter)  # flag -> stations used with it
    read_s: float = 0.0  # reader side (in the worker when workers >= 1)
    preprocess_s: float = 0.0  # reader side: windowing, resampling
    model_s: float = 0.0  # main side: predict_proba (spectrogram + network)
    wait_s: float = 0.0  # main side: waiting for the reader
    total_s: float = 0.0
    quakeml_counts: dict = field(default_factory=dict)  # from annotate_catalog, when written
    # catalog type -> predicted class -> events, when the catalog has types (agreement_table)
    agreement: dict = field(default_factory=dict)
    # the inputs held against the model card (quake.classify.card_check)
    card_check: CardCounts = field(default_factory=CardCounts)

    def count_event(self, prepared: PreparedEvent, n_windows: int, classified: bool) -> None:
        """Add one finished event: its windows, whether it was classified, its stations'
        skip reasons and the quality flags of the stations used."""
        self.n_windows += n_windows
        self.n_classified += classified
        self.n_unclassified += not classified
        self.skip_counts.update(s.reason for s in prepared.stations if not s.used)
        self.quality_counts.update(f for s in prepared.stations if s.used for f in s.flags)
        if prepared.event_reason:  # counted by its kind: "bad origin time", not each value
            self.skip_counts[prepared.event_reason.split(":", 1)[0]] += 1

    @property
    def events_per_s(self) -> float:
        done = self.n_events - self.n_resumed
        return done / self.total_s if self.total_s > 0 else 0.0

    @property
    def windows_per_s(self) -> float:
        return self.n_windows / self.total_s if self.total_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "n_events": self.n_events,
            "n_resumed": self.n_resumed,
            "n_classified": self.n_classified,
            "n_for_review": self.n_for_review,
            "n_unclassified": self.n_unclassified,
            "n_windows": self.n_windows,
            "skip_counts": dict(self.skip_counts.most_common()),
            "quality_counts": dict(self.quality_counts.most_common()),
            "read_s": self.read_s,
            "preprocess_s": self.preprocess_s,
            "model_s": self.model_s,
            "wait_s": self.wait_s,
            "total_s": self.total_s,
            "events_per_s": self.events_per_s,
            "windows_per_s": self.windows_per_s,
            "quakeml_counts": dict(self.quakeml_counts),
            "agreement": dict(self.agreement),
            "card_check": self.card_check.to_dict(),
        }


def format_prob(p: float) -> str:
    return f"{p:.6f}"


def skip_summary(prepared: PreparedEvent) -> str:
    """``"no waveform folder"`` or ``"CC.HIYU.: too short; X.bad.mseed: unreadable file"``."""
    parts = [f"{s.station_id}: {s.reason}" for s in prepared.stations if not s.used]
    if prepared.event_reason:
        parts.insert(0, prepared.event_reason)
    elif prepared.n_used == 0:
        parts.insert(0, "no usable waveform")
    return "; ".join(parts)


def event_row(
    prepared, origin_time, probs, class_names, model_id, min_probability, in_training=None,
    thresholds=None,
) -> dict[str, str]:  # fmt: skip
    """One event's row of ``predictions.csv``; ``in_training``: whether the model card lists
    the event among the training events (None, written empty, for a model without a card); its
    class as the model's decision ``thresholds`` decide (:func:`quake.probabilities.decide`)."""
    row = {
        "event_id": prepared.event_id,
        "origin_time": format_time(origin_time),
        "predicted_class": "",
        "n_stations_used": str(prepared.n_used),
        "n_stations_skipped": str(prepared.n_skipped),
        "skip_reasons": skip_summary(prepared),
        "in_training": "" if in_training is None else str(bool(in_training)),
        "model_id": model_id,
    }
    for i, name in enumerate(class_names):
        row[prob_column(name)] = "" if probs is None else format_prob(float(probs[i]))
    if probs is not None:
        row["predicted_class"] = class_names[int(decide(probs, thresholds))]
    row["review"] = review_reason(row, class_names, min_probability)
    return row


def station_rows(prepared, station_probs, class_names) -> list[dict[str, str]]:
    rows, k = [], 0
    for s in prepared.stations:
        row = {
            "event_id": prepared.event_id,
            "station_id": s.station_id,
            "status": "used" if s.used else "skipped",
            "reason": s.reason,
            "detail": s.detail,
            "quality": s.quality,
            "channels": s.channels,
            "sampling_rate_hz": "" if s.sampling_rate_hz is None else f"{s.sampling_rate_hz:g}",
        }
        for i, name in enumerate(class_names):
            row[prob_column(name)] = format_prob(float(station_probs[k, i])) if s.used else ""
        k += s.used
        rows.append(row)
    return rows


def write_csv_atomic(table: pd.DataFrame, path: Path) -> None:
    """Write ``table`` to ``path`` atomically (:func:`quake.runtime.write_atomic`)."""
    write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``predictions.csv`` back: strings kept as written (empty cells as ""), but
    ``in_training`` as booleans (pandas' nullable ``boolean``: <NA> for a model without card)."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "in_training" in table:
        flags = table["in_training"].map({"True": True, "False": False})
        table["in_training"] = flags.astype("boolean")
    return table


def merge_summaries(summaries: Sequence[ClassifySummary], n_events: int) -> ClassifySummary:
    """One summary for a sharded job: counts and busy times added, wall time the longest."""
    merged = ClassifySummary(n_events=n_events)
    for s in summaries:
        merged.n_resumed += s.n_resumed
        merged.n_classified += s.n_classified
        merged.n_for_review += s.n_for_review
        merged.n_unclassified += s.n_unclassified
        merged.n_windows += s.n_windows
        merged.skip_counts.update(s.skip_counts)
        merged.quality_counts.update(s.quality_counts)
        merged.card_check.add(s.card_check)
        merged.read_s += s.read_s
        merged.preprocess_s += s.preprocess_s
        merged.model_s += s.model_s
        merged.wait_s += s.wait_s
        merged.total_s = max(merged.total_s, s.total_s)
    return merged
