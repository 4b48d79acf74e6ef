"""The batch job: every catalog event -> one row of ``predictions.csv``.

Data flow: a reader (a DataLoader worker process when ``workers >= 1``) fetches and windows one
event at a time (:func:`quake.classify.windows.prepare_event`) while the main process runs the
model on batches of windows gathered across events; when an event's windows are scored its
station probabilities are combined (:mod:`quake.probabilities`) into its row.

Rows are written progressively and atomically: every ``flush_every`` events (at most once per
``flush_interval_s``, so a huge catalog is not rewritten thousands of times) the whole table so
far goes to a temporary file that replaces the output (``os.replace``), so the output is always
a complete, readable CSV. ``resume=True`` keeps the rows already in the output and classifies
only the other events; the final file holds every catalog event exactly once, in catalog order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from quake.classify.catalog import format_time
from quake.classify.windows import PreparedEvent, prepare_event
from quake.context import load_context_models, predict_context
from quake.data.sources import EventRequest, WaveformSource
from quake.probabilities import combine_models, combine_station_probabilities, prob_column
from quake.processes import die_with_parent
from quake.runtime import (
    OutputLock,
    autocast_for,
    backup_path,
    check_outputs_apart,
    cpu_has_native_bf16,
    resolve_device,
    write_atomic,
)

logger = logging.getLogger(__name__)

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
        + ["review", "n_stations_used", "n_stations_skipped", "skip_reasons", "model_id"]
    )


def review_reason(row: dict[str, str], class_names: Sequence[str], min_probability: float) -> str:
    """Why a classified event is left to an analyst (the ``review`` column): its predicted class
    is less probable than ``min_probability``; empty otherwise. Computed from the row's own
    probabilities, so rows kept from an earlier run follow this run's threshold."""
    if not row.get("predicted_class"):
        return ""
    top = max(float(row[prob_column(c)]) for c in class_names)
    if top >= min_probability:
        return ""
    return f"probability {top:.3f} below --min-probability {min_probability:g}"


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
        }


class _EventReader(torch.utils.data.Dataset):
    """Events to prepare, as a map-style dataset so a DataLoader worker can read them in order."""

    def __init__(self, source: WaveformSource, events: pd.DataFrame, config):
        self.source = source
        self.config = config
        self.requests = [
            EventRequest(r.event_id, r.origin_time, _float(r.latitude), _float(r.longitude))
            for r in events.itertuples(index=False)
        ]
        self.p_picks = list(events["p_picks"])

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, i: int) -> PreparedEvent:
        return prepare_event(self.source, self.requests[i], self.p_picks[i], self.config)


def _float(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(out) else out


def _keep_as_is(item):
    return item


def _reader_worker_init(_worker_id: int) -> None:
    die_with_parent()
    torch.set_num_threads(1)


def _iterate_events(reader: _EventReader, workers: int):
    if workers <= 0 or len(reader) == 0:
        return (reader[i] for i in range(len(reader)))
    loader = torch.utils.data.DataLoader(
        reader,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_keep_as_is,
        prefetch_factor=8,
        worker_init_fn=_reader_worker_init,
    )
    return iter(loader)


class _WindowBatcher:
    """Gathers station windows across events and scores them in full batches.

    A batch of 2 windows costs the model nearly as much time as one of 128, so windows wait
    until ``batch_size`` of them are there (only the last batch of the run is partial). Events
    come back in arrival order, each with its ``(k, C)`` station probabilities, once all its
    windows are scored.
    """

    def __init__(self, classifier, batch_size: int, summary: ClassifySummary, amp: bool = False):
        self.classifier = classifier
        self.batch_size = batch_size
        self.summary = summary
        self.device = torch.device(getattr(classifier, "device", "cpu"))
        self.amp = amp
        self.n_classes = len(classifier.class_names)
        self.events: deque[PreparedEvent] = deque()  # waiting for their windows' scores
        self.chunks: deque[np.ndarray] = deque()  # unscored windows, in arrival order
        self.n_unscored = 0
        self.scores: deque[np.ndarray] = deque()  # scored, not yet handed back, in order
        self.n_scored = 0

    def add(self, prepared: PreparedEvent) -> list[tuple[PreparedEvent, np.ndarray]]:
        self.events.append(prepared)
        if len(prepared.windows):
            self.chunks.append(prepared.windows)
            self.n_unscored += len(prepared.windows)
        if self.n_unscored >= self.batch_size:
            self._score(self.n_unscored - self.n_unscored % self.batch_size)
        return self._ready()

    def finish(self) -> list[tuple[PreparedEvent, np.ndarray]]:
        self._score(self.n_unscored)
        return self._ready()

    def _score(self, n: int) -> None:
        if n <= 0:
            return
        taken, count = [], 0
        while count < n:
            chunk = self.chunks.popleft()
            if count + len(chunk) > n:  # split: the rest waits for the next batch
                self.chunks.appendleft(chunk[n - count :])
                chunk = chunk[: n - count]
            taken.append(chunk)
            count += len(chunk)
        self.n_unscored -= n
        t = time.perf_counter()
        with autocast_for(self.device, self.amp):
            probs = self.classifier.predict_proba(np.concatenate(taken), batch_size=self.batch_size)
        self.summary.model_s += time.perf_counter() - t
        self.scores.append(np.asarray(probs, dtype=np.float64))
        self.n_scored += n

    def _take_scores(self, k: int) -> np.ndarray:
        out, count = [], 0
        while count < k:
            block = self.scores.popleft()
            if count + len(block) > k:
                self.scores.appendleft(block[k - count :])
                block = block[: k - count]
            out.append(block)
            count += len(block)
        self.n_scored -= k
        return np.concatenate(out) if out else np.zeros((0, self.n_classes))

    def _ready(self) -> list[tuple[PreparedEvent, np.ndarray]]:
        ready = []
        while self.events and len(self.events[0].windows) <= self.n_scored:
            prepared = self.events.popleft()
            ready.append((prepared, self._take_scores(len(prepared.windows))))
        return ready


def _format_prob(p: float) -> str:
    return f"{p:.6f}"


def skip_summary(prepared: PreparedEvent) -> str:
    """``"no waveform folder"`` or ``"CC.HIYU.: too short; X.bad.mseed: unreadable file"``."""
    parts = [f"{s.station_id}: {s.reason}" for s in prepared.stations if not s.used]
    if prepared.event_reason:
        parts.insert(0, prepared.event_reason)
    elif prepared.n_used == 0:
        parts.insert(0, "no usable waveform")
    return "; ".join(parts)


def _event_row(
    prepared, origin_time, probs, class_names, model_id, min_probability
) -> dict[str, str]:
    row = {
        "event_id": prepared.event_id,
        "origin_time": format_time(origin_time),
        "predicted_class": "",
        "n_stations_used": str(prepared.n_used),
        "n_stations_skipped": str(prepared.n_skipped),
        "skip_reasons": skip_summary(prepared),
        "model_id": model_id,
    }
    for i, name in enumerate(class_names):
        row[prob_column(name)] = "" if probs is None else _format_prob(float(probs[i]))
    if probs is not None:
        row["predicted_class"] = class_names[int(np.argmax(probs))]
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
            row[prob_column(name)] = _format_prob(float(station_probs[k, i])) if s.used else ""
        k += s.used
        rows.append(row)
    return rows


def write_csv_atomic(table: pd.DataFrame, path: Path) -> None:
    """Write ``table`` to ``path`` atomically (:func:`quake.runtime.write_atomic`)."""
    write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))


def _read_existing(path: Path, columns: list[str], model_id: str) -> pd.DataFrame:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(table.columns) != columns:
        raise ValueError(
            f"cannot resume {path}: its columns {list(table.columns)} differ from this model's "
            f"{columns}; write to a new file or drop --resume"
        )
    incomplete = np.flatnonzero((table["model_id"] == "").to_numpy())
    if len(incomplete):
        raise ValueError(
            f"cannot resume {path}: line {incomplete[0] + 2} is incomplete (no model_id; was the "
            "file cut short?); expected complete rows of a predictions table: write to a new "
            "file or drop --resume"
        )
    other = sorted(set(table["model_id"]) - {model_id})
    if other:
        raise ValueError(
            f"cannot resume {path}: it holds predictions of model(s) {other}, not {model_id!r}; "
            "write to a new file or drop --resume"
        )
    return table.drop_duplicates("event_id", keep="first")


class _Outputs:
    """Rows so far, flushed atomically (stations first, so they never lag the predictions)."""

    def __init__(self, out, stations_out, columns, station_columns, events: pd.DataFrame):
        self.out = Path(out)
        self.stations_out = Path(stations_out) if stations_out else None
        self.columns = columns
        self.station_columns = station_columns
        self.order = {eid: i for i, eid in enumerate(events["event_id"])}
        self.rows: dict[str, dict] = {}
        self.station_rows: list[dict] = []

    def load(self, model_id: str, review: Callable[[dict], str]) -> set[str]:
        if not self.out.is_file():
            return set()
        table = _read_existing(self.out, self.columns, model_id)
        table = table[table["event_id"].isin(self.order)]
        self.rows = {r["event_id"]: {**r, "review": review(r)} for r in table.to_dict("records")}
        if self.stations_out is not None and self.stations_out.is_file():
            stations = pd.read_csv(self.stations_out, dtype=str, keep_default_na=False)
            if list(stations.columns) == self.station_columns:
                keep = stations["event_id"].isin(self.rows)
                self.station_rows = stations[keep].to_dict("records")
        return set(self.rows)

    def add(self, row: dict, station_rows: list[dict]) -> None:
        self.rows[row["event_id"]] = row
        self.station_rows.extend(station_rows)

    def flush(self) -> None:
        rows = sorted(self.rows.values(), key=lambda r: self.order[r["event_id"]])
        if self.stations_out is not None:
            stations = sorted(self.station_rows, key=lambda r: self.order[r["event_id"]])
            write_csv_atomic(
                pd.DataFrame(stations, columns=self.station_columns), self.stations_out
            )
        write_csv_atomic(pd.DataFrame(rows, columns=self.columns), self.out)


def classify_catalog(
    classifier,
    events: pd.DataFrame,
    source: WaveformSource,
    out: str | os.PathLike,
    *,
    stations_out: str | os.PathLike | None = None,
    batch_size: int = 128,
    workers: int = 1,
    resume: bool = False,
    flush_every: int = 100,
    flush_interval_s: float = 10.0,
    progress: bool = True,
    amp: bool = False,
    min_probability: float = 0.0,
) -> ClassifySummary:
    """Classify every event of ``events`` (a :func:`quake.classify.catalog.read_catalog` table).

    ``classifier`` is a :class:`quake.inference.EventClassifier` (``predict_proba``,
    ``class_names``, ``config``, ``model_id``). Writes ``out`` (and ``stations_out``) and returns
    a :class:`ClassifySummary`. ``workers`` reader processes prepare events ahead of the model
    (0: read in this process). ``amp`` runs the model under autocast (:func:`autocast_for`).
    An event whose predicted class is less probable than ``min_probability`` is marked for
    review (:func:`review_reason`).
    """
    check_min_probability(min_probability)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers!r}")
    if flush_every < 1:
        raise ValueError(f"flush_every must be >= 1, got {flush_every!r}")
    class_names = list(classifier.class_names)
    model_id = str(classifier.model_id)
    columns = prediction_columns(class_names)
    station_columns = STATION_COLUMNS_HEAD + [prob_column(c) for c in class_names]
    for path in (out, stations_out):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    outputs = _Outputs(out, stations_out, columns, station_columns, events)
    summary = ClassifySummary(n_events=len(events))
    done = (
        outputs.load(model_id, lambda row: review_reason(row, class_names, min_probability))
        if resume
        else set()
    )
    summary.n_resumed = len(done)
    if done:
        logger.info("resuming: %d of %d events already in %s", len(done), len(events), out)
    todo = events[~events["event_id"].isin(done)].reset_index(drop=True)
    origin_by_id = dict(zip(events["event_id"], events["origin_time"], strict=True))
    context_by_id = catalog_context(classifier, todo)

    reader = _EventReader(source, todo, classifier.config)
    batcher = _WindowBatcher(classifier, batch_size, summary, amp=amp)
    if amp and batcher.device.type == "cpu" and not cpu_has_native_bf16():
        logger.warning("--amp: this CPU has no bf16 instructions; bf16 is emulated and slower")
    bar = _progress_bar(len(events), len(done), progress)
    since_flush = 0
    start = last_flush = time.perf_counter()

    def emit(finished: list[tuple[PreparedEvent, np.ndarray]]) -> None:
        nonlocal since_flush, last_flush
        for p, station_probs in finished:
            event_probs = (
                combine_station_probabilities(station_probs) if len(station_probs) else None
            )
            if event_probs is not None and context_by_id:
                event_probs = combine_models([event_probs[None], context_by_id[p.event_id][None]])[
                    0
                ]
            row = _event_row(
                p, origin_by_id[p.event_id], event_probs, class_names, model_id, min_probability
            )
            outputs.add(row, station_rows(p, station_probs, class_names))
            summary.n_windows += len(station_probs)
            summary.n_classified += event_probs is not None
            summary.n_unclassified += event_probs is None
            summary.skip_counts.update(s.reason for s in p.stations if not s.used)
            summary.quality_counts.update(f for s in p.stations if s.used for f in s.flags)
            if p.event_reason:
                summary.skip_counts[p.event_reason] += 1
        if bar is not None and finished:
            bar.update(len(finished))
        since_flush += len(finished)
        if since_flush >= flush_every and time.perf_counter() - last_flush >= flush_interval_s:
            outputs.flush()
            since_flush, last_flush = 0, time.perf_counter()

    try:
        events_iter = _iterate_events(reader, workers)
        while True:
            t = time.perf_counter()
            prepared = next(events_iter, None)
            summary.wait_s += time.perf_counter() - t
            if prepared is None:
                break
            summary.read_s += prepared.read_s
            summary.preprocess_s += prepared.preprocess_s
            emit(batcher.add(prepared))
        emit(batcher.finish())
    finally:
        outputs.flush()
        if bar is not None:
            bar.close()
    summary.total_s = time.perf_counter() - start
    summary.n_for_review = sum(bool(r["review"]) for r in outputs.rows.values())
    missing = set(events["event_id"]) - set(outputs.rows)
    if missing:  # cannot happen unless a bug drops an event: say so loudly
        raise RuntimeError(f"{len(missing)} events have no row: {sorted(missing)[:5]}")
    logger.info(
        "classified %d events (%d without usable waveform, %d resumed) at %.1f events/s",
        summary.n_classified,
        summary.n_unclassified,
        summary.n_resumed,
        summary.events_per_s,
    )
    return summary


def catalog_context(classifier, events: pd.DataFrame) -> dict[str, np.ndarray]:
    """Event id -> the catalog-context probabilities of a model trained with
    ``context.enabled`` (from each event's origin time, longitude, depth and magnitude), or {}
    for a model trained on waveforms only."""
    models = getattr(classifier, "context_models", None)
    if not models or events.empty:
        return {}
    table = events.rename(
        columns={
            "origin_time": "source_origin_time",
            "longitude": "source_longitude_deg",
            "depth_km": "source_depth_km",
            "magnitude": "source_magnitude",
        }
    )
    logger.info(
        "catalog context: origin time, longitude, depth and magnitude join each event's vote"
    )
    return dict(zip(events["event_id"], predict_context(models, table), strict=True))


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="event", desc="classifying", dynamic_ncols=True)


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``predictions.csv`` back (strings kept as written; empty cells as "")."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def load_classifier(path: str | os.PathLike, device: str = "cpu"):
    """The classifier in a run folder or its ``model/`` folder, by the format its
    ``classifier.json`` names: a :class:`quake.combined_classifier.CombinedClassifier`
    (``deploy.strategy: combined``), a :class:`quake.inference.EventClassifier` (``ensemble``)
    or a :class:`quake.baseline_classifier.BaselineClassifier` (``baseline``)."""
    from quake import baseline_classifier, combined_classifier
    from quake.inference import CLASSIFIER_FILE, EventClassifier, saved_format

    path = Path(path)
    folder = path / "model" if (path / "model" / CLASSIFIER_FILE).is_file() else path
    kind = saved_format(folder / CLASSIFIER_FILE)  # None: EventClassifier.load says what is wrong
    if kind == baseline_classifier.FORMAT:
        classifier = baseline_classifier.BaselineClassifier.load(folder)
    elif kind == combined_classifier.FORMAT:
        classifier = combined_classifier.CombinedClassifier.load(
            folder, device=resolve_device(device)
        )
    else:
        classifier = EventClassifier.load(path, device=resolve_device(device))
    # trained with context.enabled: the fold models of the catalog context (quake.context)
    classifier.context_models = load_context_models(folder)
    return classifier


def run_classification(
    model,
    catalog,  # a path (QuakeML or CSV) or an obspy Catalog
    waveforms,  # a path or URL, or an obspy SDS or FDSN Client
    out: str | os.PathLike,
    *,
    quakeml: str | os.PathLike | None = None,
    stations_out: str | os.PathLike | None = None,
    id_rule: str = "auto",
    overwrite_reviewed: bool = False,
    overwrite_types: bool = False,
    in_place: bool = False,
    min_probability: float = 0.0,
    resume: bool = False,
    batch_size: int = 128,
    source: str = "auto",
    before_s: float | None = None,
    after_s: float | None = None,
    workers: int = 1,
    flush_every: int = 100,
    device: str = "cpu",
    progress: bool = True,
    amp: bool = False,
    ranks=None,
) -> ClassifySummary:
    """The whole job of ``scripts/classify.py``: catalog + waveforms -> predictions (+ QuakeML).

    ``model`` is an EventClassifier or a path to one (run folder or model folder), loaded onto
    ``device`` (``cpu``, ``cuda`` or ``auto``; under torchrun ``cuda`` is this rank's GPU).
    ``ranks`` (a :class:`quake.classify.shard.RankGroup`, from ``rank_group()``) shards the
    catalog over torchrun's processes; rank 0 merges the parts, writes the QuakeML and returns
    the summary of the whole job, the other ranks their own share's.
    """
    from quake.classify.catalog import (
        agreement_table,
        annotate_catalog,
        read_catalog_with_events,
        write_quakeml,
    )
    from quake.classify.shard import RankGroup, Shard
    from quake.data.sources import DEFAULT_AFTER_S, DEFAULT_BEFORE_S, open_source

    ranks = ranks if ranks is not None else RankGroup(Shard())
    if isinstance(model, (str, os.PathLike)):
        classifier = load_classifier(model, ranks.device(device))
    else:
        classifier = model
    outputs = {"--out": out, "--stations-out": stations_out, "--quakeml": quakeml}
    for flag, path in outputs.items():
        if path is not None and Path(path).is_dir():
            raise ValueError(f"{flag} {str(path)!r} is a folder; expected the path of a file")

    def as_path(value):  # a Catalog, a Client or a classifier in memory is no file to protect
        return value if isinstance(value, (str, os.PathLike)) else None

    check_outputs_apart(
        outputs,
        {
            "--catalog": as_path(catalog),
            "--waveforms": as_path(waveforms),
            "--model": as_path(model),
        },
        in_place=[("--quakeml", "--catalog")] if in_place else [],
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with _one_writer(out, ranks):
        events, obspy_catalog = read_catalog_with_events(catalog, id_rule)
        wave_source = open_source(
            str(waveforms) if isinstance(waveforms, os.PathLike) else waveforms,
            source,
            before_s=DEFAULT_BEFORE_S if before_s is None else before_s,
            after_s=DEFAULT_AFTER_S if after_s is None else after_s,
            config=classifier.config,
        )
        logger.info("model %s; waveforms from %s", classifier.model_id, wave_source.describe())
        options = dict(
            min_probability=min_probability,
            batch_size=batch_size,
            workers=workers,
            flush_every=flush_every,
            progress=progress,
            amp=amp,
        )
        if ranks.shard.is_single:
            summary = classify_catalog(
                classifier,
                events,
                wave_source,
                out,
                stations_out=stations_out,
                resume=resume,
                **options,
            )
        else:
            summary = _classify_sharded(
                classifier, events, wave_source, out, stations_out, resume, ranks, options
            )
            if not ranks.is_main:
                return summary
        predictions = read_predictions(out)  # the complete table, merged when sharded
        class_names = list(classifier.class_names)
        if quakeml is not None:
            counts = annotate_catalog(
                obspy_catalog,
                list(events["event_id"]),
                predictions,
                class_names,
                [prob_column(c) for c in class_names],
                str(classifier.model_id),
                overwrite_reviewed=overwrite_reviewed,
                overwrite_types=overwrite_types,
            )
            if (
                as_path(catalog) and Path(quakeml).resolve() == Path(catalog).resolve()
            ):  # --in-place
                backup = backup_path(catalog)
                shutil.copy2(catalog, backup)
                logger.warning("writing the classified QuakeML over %s; the original is kept as %s",
                               catalog, backup)  # fmt: skip
            write_quakeml(obspy_catalog, quakeml)
            summary.quakeml_counts = counts
            logger.info("QuakeML %s: %s", quakeml, counts)
        table = agreement_table(events, predictions, class_names)
        if not table.empty:
            write_csv_atomic(table.reset_index(), agreement_path(out))
            summary.agreement = {
                str(t): {str(p): int(n) for p, n in row.items()} for t, row in table.iterrows()
            }
        return summary


@contextlib.contextmanager
def _one_writer(out: str | os.PathLike, ranks) -> Iterator[None]:
    """One job per output: the lock beside ``out`` (:class:`quake.runtime.OutputLock`). A
    sharded job's rank 0 holds it for the whole job and tells the other ranks whether it got it,
    so that all of them stop when another job writes ``out``."""
    lock = OutputLock(lock_path(out), f"--out {str(out)!r}")
    if ranks.shard.is_single:
        with lock:
            yield
        return
    refusal = None
    if ranks.is_main:
        try:
            lock.__enter__()
        except ValueError as err:
            refusal = str(err)
    refusal = ranks.gather(refusal)[0]
    if refusal is not None:
        raise ValueError(refusal)
    try:
        yield
    finally:
        if ranks.is_main:
            lock.__exit__(None, None, None)


def lock_path(out: str | os.PathLike) -> Path:
    """The lock of a classification writing ``out``: ``.<name>.lock`` beside it."""
    out = Path(out)
    return out.with_name(f".{out.name}.lock")


def agreement_path(out: str | os.PathLike) -> Path:
    """Where the catalog-type vs prediction table of ``out`` goes: ``<out stem>.agreement.csv``."""
    out = Path(out)
    return out.with_name(out.stem + ".agreement.csv")


def _classify_sharded(classifier, events, source, out, stations_out, resume, ranks, options):
    """This rank's slice into its part files; then rank 0 merges every rank's parts."""
    from quake.classify.shard import Shard, merge_parts, seed_part

    shard = ranks.shard
    mine = shard.select(events)
    part = shard.part_path(out)
    station_part = shard.part_path(stations_out) if stations_out is not None else None
    if resume:
        ids = list(mine["event_id"])
        columns = prediction_columns(list(classifier.class_names))
        seeded = seed_part(part, Path(out), ids, columns)
        if station_part is not None:
            seed_part(station_part, Path(stations_out), ids)
        if seeded:
            logger.info("rank %d: %d rows taken over from %s", shard.rank, seeded, out)
    options = {**options, "progress": options["progress"] and ranks.is_main}
    start, stop = shard.bounds(len(events))
    logger.info("rank %d of %d: events %d..%d", shard.rank, shard.world_size, start, stop - 1)
    summary = classify_catalog(
        classifier, mine, source, part, stations_out=station_part, resume=resume, **options
    )
    summaries = ranks.gather(summary)  # also the barrier: every part is complete after it
    if ranks.is_main:
        world = [Shard(r, shard.world_size) for r in range(shard.world_size)]
        ids = list(events["event_id"])
        merge_parts(out, [s.part_path(out) for s in world], ids)
        if stations_out is not None:
            parts = [s.part_path(stations_out) for s in world]
            merge_parts(stations_out, parts, ids, one_row_per_event=False)
        summary = merge_summaries(summaries, n_events=len(events))
    ranks.barrier()  # the other ranks leave once the output is merged
    return summary


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
        merged.read_s += s.read_s
        merged.preprocess_s += s.preprocess_s
        merged.model_s += s.model_s
        merged.wait_s += s.wait_s
        merged.total_s = max(merged.total_s, s.total_s)
    return merged
