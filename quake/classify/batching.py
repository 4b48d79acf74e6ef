"""Reading and batching: events are fetched and windowed by a reader (a DataLoader worker
process when ``workers >= 1``) while the main process scores batches of windows gathered across
events.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import pandas as pd
import torch

from quake.classify.tables import ClassifySummary
from quake.classify.windows import PreparedEvent, prepare_event, unusable_event
from quake.data.catalog import utc_or_none
from quake.data.sources import EventRequest, WaveformSource
from quake.processes import die_with_parent
from quake.runtime import (
    autocast_for,
)


class EventReader(torch.utils.data.Dataset):
    """Events to prepare, as a map-style dataset so a DataLoader worker can read them in order."""

    def __init__(self, source: WaveformSource, events: pd.DataFrame, config):
        self.source = source
        self.config = config
        # the table's columns, not an object per event: a catalog may hold millions
        self.event_ids = events["event_id"].to_numpy()
        self.origin_times = events["origin_time"].to_numpy()
        self.latitudes = events["latitude"].to_numpy()
        self.longitudes = events["longitude"].to_numpy()
        self.p_picks = events["p_picks"].to_numpy()
        reasons = events["skip_reason"] if "skip_reason" in events else None
        self.skip_reasons = None if reasons is None else reasons.astype(str).to_numpy()

    def __len__(self) -> int:
        return len(self.event_ids)

    def request(self, i: int) -> EventRequest:
        return EventRequest(
            self.event_ids[i],
            utc_or_none(self.origin_times[i]),
            _float(self.latitudes[i]),
            _float(self.longitudes[i]),
        )

    def __getitem__(self, i: int) -> PreparedEvent:
        if self.skip_reasons is not None and self.skip_reasons[i]:  # e.g. a bad origin time
            return unusable_event(self.event_ids[i], self.skip_reasons[i], self.config)
        return prepare_event(self.source, self.request(i), self.p_picks[i] or {}, self.config)


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


def iterate_events(reader: EventReader, workers: int):
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


class WindowBatcher:
    """Gathers station windows across events and scores them in full batches.

    A batch of 2 windows costs the model nearly as much time as one of 128, so windows wait
    until ``batch_size`` of them are there (only the last batch of the run is partial). Events
    come back in arrival order, each with its ``(k, C)`` station probabilities (a station's
    windows pooled), once all its windows are scored.
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
            window_probs = self._take_scores(len(prepared.windows))
            ready.append((prepared, prepared.station_probabilities(window_probs)))
        return ready


def progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="event", desc="classifying", dynamic_ncols=True)
