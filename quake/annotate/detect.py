"""Detections: stretches of a station's probability traces where an event class stays high.

For a model with a ``noise`` class, each event class (every class but ``noise``) is triggered on
its own probability trace with hysteresis: a detection starts where the probability reaches the
class's threshold and lasts while it stays at or above ``off_fraction`` times it (the trigger-off
level); a skipped window (NaN) ends it; one shorter than ``min_duration_s`` (counted in windows
times the stride; default two windows) is dropped. Thresholds default to the model's saved
decision thresholds (``decision.json``), else 0.5, and can be set per class.

For a model without a ``noise`` class every window gets an event class, so the detections are
the STA/LTA triggers (:mod:`quake.annotate.propose`) whose windows were classified; each takes
the class the model's decision thresholds give its window.

One row per detection (QuakeXNet writes ``starttime, endtime, label, max_prob, mean_prob``):
``station`` (NET.STA.LOC), ``start``, ``end`` (ISO 8601, UTC: from the first window's first
sample to the last window's last, or from the trigger's on to its off), ``onset`` (the STA/LTA
trigger's on, or the start of the detection's most probable window plus ``pre_arrival_s``, where
training puts the P arrival: the time stations are associated by, :mod:`quake.annotate.events`),
``class``, ``max_prob``, ``mean_prob``, ``windows`` (how many), ``method`` (``probability`` or
``sta/lta``), ``flags``: the quality flags of its windows, ``;``-joined, plus ``edge`` when it
touches the first or last window of the span annotated (it may go on beyond it); then
``prob_<class>`` for every class: the probabilities of the one window the station's vote for an
event comes from (the most probable window of the detection, or the trigger's window).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from quake.annotate.engine import StationAnnotation
from quake.annotate.propose import NOISE_CLASS
from quake.probabilities import decide, prob_column

DETECTION_COLUMNS = [
    "station", "start", "end", "onset", "class", "max_prob", "mean_prob", "windows", "method",
    "flags",
]  # fmt: skip
#: Default threshold of a class when the model saved none.
DEFAULT_THRESHOLD = 0.5
#: Default trigger-off level, as a fraction of the class's threshold.
DEFAULT_OFF_FRACTION = 0.8


def detection_columns(class_names: Sequence[str]) -> list[str]:
    """:data:`DETECTION_COLUMNS` and a ``prob_<class>`` column per class."""
    return DETECTION_COLUMNS + [prob_column(c) for c in class_names]


def _probabilities(class_names: Sequence[str], probs: np.ndarray) -> dict[str, float]:
    return {prob_column(c): float(p) for c, p in zip(class_names, probs, strict=True)}


def class_thresholds(
    class_names: Sequence[str],
    saved: np.ndarray | None = None,
    overrides: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """``{class: threshold}``: ``overrides``, else the model's ``saved`` decision thresholds,
    else :data:`DEFAULT_THRESHOLD`. A ValueError names an unknown class or a bad value."""
    names = list(class_names)
    base = [DEFAULT_THRESHOLD] * len(names) if saved is None else [float(t) for t in saved]
    thresholds = dict(zip(names, base, strict=True))
    for name, value in (overrides or {}).items():
        if name not in thresholds:
            raise ValueError(f"threshold for unknown class {name!r}; expected one of {names}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError(f"threshold of {name!r} must be in (0, 1], got {value!r}")
        thresholds[name] = float(value)
    return thresholds


def trigger_runs(p: np.ndarray, on: float, off: float) -> list[tuple[int, int]]:
    """``[(first, last)]`` window indices (inclusive) of each run that reaches ``on`` and
    lasts while ``p >= off``; NaN ends a run."""
    runs, first = [], None
    for k, value in enumerate(p):
        if first is None:
            if value >= on:
                first = k
        elif not value >= off:  # NaN included
            runs.append((first, k - 1))
            first = None
    if first is not None:
        runs.append((first, len(p) - 1))
    return runs


def _flags(annotation: StationAnnotation, first: int, last: int) -> str:
    flags = sorted({f for k in range(first, last + 1) for f in annotation.flags[k]})
    if first == 0 or last == annotation.n_windows - 1:
        flags.append("edge")
    return ";".join(flags)


def probability_detections(
    annotation: StationAnnotation,
    thresholds: Mapping[str, float],
    *,
    off_fraction: float = DEFAULT_OFF_FRACTION,
    min_duration_s: float | None = None,
) -> list[dict]:
    """The rows of the module docstring for each event class of ``annotation``."""
    if not 0 < off_fraction <= 1:
        raise ValueError(f"off_fraction must be in (0, 1], got {off_fraction!r}")
    min_windows = 2 if min_duration_s is None else max(1, int(np.ceil(
        min_duration_s / annotation.stride_s - 1e-9)))  # fmt: skip
    rows = []
    for c, name in enumerate(annotation.class_names):
        if name == NOISE_CLASS or not annotation.n_windows:
            continue
        p = annotation.probabilities[:, c]
        threshold = thresholds[name]
        for first, last in trigger_runs(p, threshold, off_fraction * threshold):
            if last - first + 1 < min_windows:
                continue
            span = p[first : last + 1]
            peak = first + int(np.argmax(span))
            rows.append({
                "station": annotation.station,
                "start": str(annotation.window_start(first)),
                "end": str(annotation.window_start(last) + annotation.window_s),
                "onset": str(annotation.window_start(peak) + annotation.pre_arrival_s),
                "class": name,
                "max_prob": float(span.max()),
                "mean_prob": float(span.mean()),
                "windows": last - first + 1,
                "method": "probability",
                "flags": _flags(annotation, first, last),
                **_probabilities(annotation.class_names, annotation.probabilities[peak]),
            })  # fmt: skip
    return rows


def proposal_detections(
    annotation: StationAnnotation, decision_thresholds: np.ndarray | None = None
) -> list[dict]:
    """One row per classified STA/LTA proposal of ``annotation`` (module docstring)."""
    rows = []
    t0, sr = annotation.first_start, annotation.sampling_rate_hz
    for proposal in annotation.proposals or []:
        if proposal.probabilities is None:
            continue
        c = int(decide(proposal.probabilities[None], decision_thresholds)[0])
        p = float(proposal.probabilities[c])
        rows.append({
            "station": annotation.station,
            "start": str(t0 + proposal.on / sr),
            "end": str(t0 + proposal.off / sr),
            "onset": str(t0 + proposal.on / sr),
            "class": annotation.class_names[c],
            "max_prob": p,
            "mean_prob": p,
            "windows": 1,
            "method": "sta/lta",
            "flags": ";".join(proposal.flags),
            **_probabilities(annotation.class_names, proposal.probabilities),
        })  # fmt: skip
    return rows


def detections(
    annotations: Sequence[StationAnnotation],
    class_names: Sequence[str],
    decision_thresholds: np.ndarray | None = None,
    *,
    thresholds: Mapping[str, float] | None = None,
    off_fraction: float = DEFAULT_OFF_FRACTION,
    min_duration_s: float | None = None,
) -> pd.DataFrame:
    """The detections table of every station (:func:`detection_columns`, sorted by start):
    from STA/LTA proposals where a station has them, else from the probability traces.
    ``thresholds``: per-class overrides of the model's."""
    levels = class_thresholds(class_names, decision_thresholds, thresholds)
    rows = []
    for annotation in annotations:
        if annotation.proposals is not None:
            rows += proposal_detections(annotation, decision_thresholds)
        else:
            rows += probability_detections(
                annotation, levels, off_fraction=off_fraction, min_duration_s=min_duration_s
            )
    table = pd.DataFrame(rows, columns=detection_columns(class_names))
    return table.sort_values(["start", "station", "class"], kind="stable").reset_index(drop=True)
