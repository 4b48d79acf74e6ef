"""Catalog context for the event-level decision (``context.enabled``, off by default).

Analysts tell blasts from earthquakes partly without the waveforms: explosions and quarry
blasts happen in working hours on working days, at the surface, often at the same few
magnitudes. This module turns what a catalog says about an event (origin time, longitude,
depth, magnitude) into features, fits a small model on them per training fold, and gives class
probabilities per event that join the waveform model's event probabilities as one more equal
vote (:func:`quake.probabilities.combine_models`, the rule used everywhere else).

Local time: ``context.timezone`` as an IANA name (``America/Los_Angeles``: daylight saving
included) or a fixed offset (``UTC-08:00``); ``null`` takes the solar offset of each event's
longitude (``round(longitude / 15)`` hours), which needs no configuration and is within an hour
of civil time almost everywhere.

A caution the report repeats: a catalog's depth for a blast is often *fixed* at the surface by
an analyst who already knew it was a blast. Then depth carries the label, not evidence, and a
model that uses it looks better on that catalog than it will on new events. Waveform-only stays
the default, and the report shows both.

The model: logistic regression (scikit-learn, balanced class weights) on standardised features;
a missing depth or magnitude is imputed with the training median and flagged. Stored as JSON
(``context.json`` beside ``classifier.json``): coefficients, scaler and medians, no pickle.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from quake.probabilities import full_class_probabilities
from quake.runtime import read_json, write_text_atomic

CONTEXT_FILE = "context.json"
FORMAT = "quake.ContextModel"
FEATURES = (
    "local_hour_sin",
    "local_hour_cos",
    "working_hours",  # Monday-Friday, 07:00-18:00 local
    "weekend",
    "depth_km",
    "depth_missing",
    "magnitude",
    "magnitude_missing",
)
#: The catalog columns (SeisBench names) the features come from.
COLUMNS = ("source_origin_time", "source_longitude_deg", "source_depth_km", "source_magnitude")
_OFFSET = re.compile(r"^UTC([+-])(\d{1,2})(?::?(\d{2}))?$")


def parse_timezone(name: str | None):
    """``None`` (solar time from longitude), an IANA name or ``UTC±HH[:MM]`` -> a tzinfo or
    None; anything else is refused with the value."""
    if name is None:
        return None
    match = _OFFSET.match(name.strip())
    if match:
        sign = 1 if match.group(1) == "+" else -1
        hours, minutes = int(match.group(2)), int(match.group(3) or 0)
        if hours > 14 or minutes > 59:
            raise ValueError(
                f"context.timezone={name!r} is invalid; expected an offset within ±14:00"
            )
        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"context.timezone={name!r} is invalid; expected an IANA time zone "
            "(e.g. 'America/Los_Angeles'), 'UTC+HH:MM', or null for the solar time of each "
            "event's longitude"
        ) from exc


def _local_time(origin: pd.Timestamp, longitude: float, tz) -> datetime | None:
    if pd.isna(origin):
        return None
    utc = origin.to_pydatetime()
    if tz is not None:
        return utc.astimezone(tz)
    if longitude is None or not np.isfinite(longitude):
        return None
    return utc + timedelta(hours=round(float(longitude) / 15.0))


def context_features(events: pd.DataFrame, timezone_name: str | None = None) -> np.ndarray:
    """``(E, len(FEATURES))`` float64 features of events with the :data:`COLUMNS` (a missing
    column counts as unknown for every event). Unknown time: hour features 0; unknown depth or
    magnitude: NaN plus its ``*_missing`` flag (imputed by :class:`ContextModel`)."""
    tz = parse_timezone(timezone_name)
    n = len(events)

    def column(name: str) -> pd.Series:
        if name in events:
            return events[name].reset_index(drop=True)
        return pd.Series([None] * n, dtype=object)

    times = column("source_origin_time").map(lambda t: None if t is None else str(t))  # UTCDateTime
    origins = pd.to_datetime(times, utc=True, errors="coerce", format="ISO8601")
    longitudes = pd.to_numeric(column("source_longitude_deg"), errors="coerce").to_numpy(float)
    depths = pd.to_numeric(column("source_depth_km"), errors="coerce").to_numpy(float)
    magnitudes = pd.to_numeric(column("source_magnitude"), errors="coerce").to_numpy(float)
    out = np.zeros((n, len(FEATURES)))
    for i in range(n):
        local = _local_time(origins[i], longitudes[i], tz)
        if local is not None:
            hour = local.hour + local.minute / 60.0 + local.second / 3600.0
            out[i, 0] = np.sin(2 * np.pi * hour / 24.0)
            out[i, 1] = np.cos(2 * np.pi * hour / 24.0)
            weekday = local.weekday() < 5
            out[i, 2] = float(weekday and 7.0 <= hour < 18.0)
            out[i, 3] = float(not weekday)
    out[:, 4], out[:, 5] = depths, np.isnan(depths)
    out[:, 6], out[:, 7] = magnitudes, np.isnan(magnitudes)
    return out


def event_table(metadata: pd.DataFrame, source_ids: Sequence[str]) -> pd.DataFrame:
    """One row per distinct ``source_id`` (sorted) with the :data:`COLUMNS` of its first trace."""
    frame = metadata.reset_index(drop=True).copy()
    frame["source_id"] = np.asarray(source_ids).astype(str)
    keep = ["source_id"] + [c for c in COLUMNS if c in frame]
    return frame[keep].drop_duplicates("source_id").sort_values("source_id").reset_index(drop=True)


@dataclass
class ContextModel:
    """Logistic regression on :func:`context_features` (module doc)."""

    n_classes: int
    timezone: str | None
    mean: np.ndarray
    scale: np.ndarray
    medians: np.ndarray
    coef: np.ndarray  # (n_classes or 1, F)
    intercept: np.ndarray
    classes: np.ndarray  # the class indices the regression saw

    @classmethod
    def fit(
        cls, features: np.ndarray, labels: np.ndarray, n_classes: int, timezone: str | None
    ) -> ContextModel:
        import warnings

        from sklearn.linear_model import LogisticRegression

        with warnings.catch_warnings():  # a column no training event has: median 0
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = np.nan_to_num(np.nanmedian(features, axis=0))
        x = np.where(np.isnan(features), medians, features)
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale == 0] = 1.0
        classes = np.unique(labels)
        if len(classes) < 2:
            raise ValueError(
                f"the catalog context model needs events of two classes, got only class {classes}"
            )
        regression = LogisticRegression(class_weight="balanced", max_iter=1000)
        regression.fit((x - mean) / scale, labels)
        return cls(n_classes, timezone, mean, scale, medians, regression.coef_,
                   regression.intercept_, classes)  # fmt: skip

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """``(E, n_classes)`` probabilities; a class the regression never saw gets 0."""
        x = np.where(np.isnan(features), self.medians, features)
        logits = ((x - self.mean) / self.scale) @ self.coef.T + self.intercept
        if logits.shape[1] == 1:  # binary: sklearn's one column is the second class
            logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        seen = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return full_class_probabilities(seen, self.classes, self.n_classes)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "features": list(FEATURES),
            "n_classes": self.n_classes,
            "timezone": self.timezone,
            **{
                name: np.asarray(getattr(self, name)).tolist()
                for name in ("mean", "scale", "medians", "coef", "intercept", "classes")
            },
        }

    @classmethod
    def from_dict(cls, data: dict) -> ContextModel:
        if data.get("format") != FORMAT or list(data.get("features", [])) != list(FEATURES):
            raise ValueError(
                f"not a catalog context model of this quake (format {data.get('format')!r}, "
                f"features {data.get('features')}); expected {FORMAT!r} with {list(FEATURES)}"
            )
        arrays = {
            name: np.asarray(data[name], dtype=np.int64 if name == "classes" else np.float64)
            for name in ("mean", "scale", "medians", "coef", "intercept", "classes")
        }
        return cls(int(data["n_classes"]), data.get("timezone"), **arrays)


def save_context_models(models: Sequence[ContextModel], folder: str | os.PathLike) -> Path:
    """The fold models of a run -> ``folder/context.json`` (probabilities averaged on use)."""
    path = Path(folder) / CONTEXT_FILE
    payload = {"format": FORMAT + "s", "members": [m.to_dict() for m in models]}
    write_text_atomic(path, json.dumps(payload, indent=1) + "\n")
    return path


def load_context_models(folder: str | os.PathLike) -> list[ContextModel] | None:
    """The fold context models saved with a classifier, or None when it was trained without."""
    path = Path(folder) / CONTEXT_FILE
    if not path.is_file():
        return None
    payload = read_json(path, "the context.json of a quake model")
    return [ContextModel.from_dict(m) for m in payload.get("members", [])] or None


def predict_context(models: Sequence[ContextModel], events: pd.DataFrame) -> np.ndarray:
    """Mean of the fold context models' probabilities for catalog ``events``."""
    features = context_features(events, models[0].timezone)
    return np.mean([m.predict_proba(features) for m in models], axis=0)
