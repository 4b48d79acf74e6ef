"""The batch job: every catalog event -> one row of ``predictions.csv``.

Data flow: a reader (a DataLoader worker process when ``workers >= 1``) fetches and windows one
event at a time (:func:`quake.classify.windows.prepare_event`) while the main process runs the
model on batches of windows gathered across events; when an event's windows are scored its
station probabilities are combined (:mod:`quake.probabilities`) into its row.

Rows are written progressively and atomically: every ``flush_every`` events (at most once per
``flush_interval_s``, so a huge catalog is not rewritten thousands of times) the output so far
plus the new rows go to a temporary file that replaces the output (``os.replace``), so the
output is always a complete, readable CSV; memory holds only the rows since the last flush
(:class:`quake.classify.outputs.Outputs`). ``resume=True`` keeps the rows already in the output
and classifies only the other events; the final file holds every catalog event exactly once, in
catalog order. Without ``--quakeml`` the catalog is read as a compact table
(:func:`quake.data.catalog.compact_table`) and its obspy Catalog is not kept.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from quake.classify.batching import EventReader, WindowBatcher, iterate_events, progress_bar
from quake.classify.card_check import CardCheck
from quake.classify.catalog import (
    agreement_table,
    annotate_catalog,
    read_catalog,
    read_catalog_with_events,
    write_quakeml,
)
from quake.classify.outputs import Outputs, agreement_path, one_writer
from quake.classify.shard import Shard, merge_parts, seed_part
from quake.classify.tables import (
    STATION_COLUMNS_HEAD,
    ClassifySummary,
    check_min_probability,
    event_row,
    merge_summaries,
    prediction_columns,
    read_predictions,
    review_reason,
    station_rows,
    write_csv_atomic,
)
from quake.classify.windows import PreparedEvent
from quake.data.catalog import utc_or_none
from quake.data.sources import DEFAULT_AFTER_S, DEFAULT_BEFORE_S, WaveformSource, open_source
from quake.models.context import predict_context
from quake.probabilities import combine_models, combine_station_probabilities, prob_column
from quake.runtime import (
    SINGLE,
    Ranks,
    backup_path,
    check_outputs_apart,
    cpu_has_native_bf16,
)

logger = logging.getLogger(__name__)


def classify_events(
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
    say_card: bool = True,
) -> ClassifySummary:
    """Classify every event of ``events`` (a :func:`quake.classify.catalog.read_catalog` table).

    ``classifier`` is a :class:`quake.deploy.ensemble.EventClassifier` (``predict_proba``,
    ``class_names``, ``config``, ``model_id``). Writes ``out`` (and ``stations_out``) and returns
    a :class:`ClassifySummary`. ``workers`` reader processes prepare events ahead of the model
    (0: read in this process). ``amp`` runs the model under autocast (:func:`autocast_for`).
    An event whose predicted class is less probable than ``min_probability`` is marked for
    review (:func:`review_reason`).

    The events and windows are held against the model card (:mod:`quake.classify.card_check`):
    each row's ``in_training`` says whether the model was trained on the event, the summary's
    ``card_check`` counts what differs from training, and the differences are logged once at
    the end (``say_card=False``: left to the caller, who adds the counts of several calls).
    """
    _check_options(min_probability, batch_size, workers, flush_every)
    class_names = list(classifier.class_names)
    model_id = str(classifier.model_id)
    thresholds = getattr(classifier, "decision_thresholds", None)  # None: the most probable
    columns = prediction_columns(class_names)
    station_columns = STATION_COLUMNS_HEAD + [prob_column(c) for c in class_names]
    for path in (out, stations_out):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    outputs = Outputs(out, stations_out, columns, station_columns, events["event_id"])
    summary = ClassifySummary(n_events=len(events))
    done = (
        outputs.load(model_id, lambda row: review_reason(row, class_names, min_probability))
        if resume
        else np.zeros(len(events), dtype=bool)
    )
    summary.n_resumed = int(done.sum())
    if summary.n_resumed:
        logger.info("resuming: %d of %d events already in %s", summary.n_resumed, len(events), out)
    todo = events[~done].reset_index(drop=True) if done.any() else events
    todo_positions = np.flatnonzero(~done)  # each todo event's place in the catalog
    todo_ids, todo_origins = todo["event_id"].to_numpy(), todo["origin_time"].to_numpy()
    n_emitted = 0
    context_by_id = catalog_context(classifier, todo)
    card = CardCheck.of(classifier)
    in_training = card.mark_events(events["event_id"])  # every catalog event, resumed ones too

    reader = EventReader(source, todo, classifier.config)
    batcher = WindowBatcher(classifier, batch_size, summary, amp=amp)
    if amp and batcher.device.type == "cpu" and not cpu_has_native_bf16():
        logger.warning("bf16: this CPU has no bf16 instructions; bf16 is emulated and slower")
    bar = progress_bar(len(events), len(done), progress)
    since_flush = 0
    start = last_flush = time.perf_counter()

    def emit(finished: list[tuple[PreparedEvent, np.ndarray]]) -> None:
        nonlocal since_flush, last_flush, n_emitted
        for p, station_probs in finished:
            k, n_emitted = n_emitted, n_emitted + 1  # events come back in the reader's order
            if todo_ids[k] != p.event_id:
                raise RuntimeError(f"event {p.event_id} came back in the place of {todo_ids[k]}")
            event_probs = event_probabilities(station_probs, context_by_id.get(p.event_id))
            row = event_row(
                p, utc_or_none(todo_origins[k]), event_probs, class_names, model_id,
                min_probability, in_training[todo_positions[k]], thresholds,
            )  # fmt: skip
            card.add(p)
            outputs.add(row, station_rows(p, station_probs, class_names), todo_positions[k])
            summary.count_event(p, len(p.windows), classified=event_probs is not None)
        if bar is not None and finished:
            bar.update(len(finished))
        since_flush += len(finished)
        if since_flush >= flush_every and time.perf_counter() - last_flush >= flush_interval_s:
            outputs.flush()
            since_flush, last_flush = 0, time.perf_counter()

    try:
        events_iter = iterate_events(reader, workers)
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
    summary.n_for_review = outputs.n_for_review
    missing = events["event_id"][~outputs.has_row]
    if len(missing):  # cannot happen unless a bug drops an event: say so loudly
        raise RuntimeError(f"{len(missing)} events have no row: {list(missing[:5])}")
    logger.info(
        "classified %d events (%d without usable waveform, %d resumed) at %.1f events/s",
        summary.n_classified,
        summary.n_unclassified,
        summary.n_resumed,
        summary.events_per_s,
    )
    summary.card_check = card.counts
    if say_card:
        card.say()
    return summary


def _check_options(min_probability: float, batch_size: int, workers: int, flush_every: int):
    check_min_probability(min_probability)
    for name, value, least in (
        ("batch_size", batch_size, 1),
        ("workers", workers, 0),
        ("flush_every", flush_every, 1),
    ):
        if value < least:
            raise ValueError(f"{name} must be >= {least}, got {value!r}")


def event_probabilities(
    station_probs: np.ndarray, context: np.ndarray | None = None
) -> np.ndarray | None:
    """An event's probabilities from its stations' (None without a usable station), joined by
    the catalog context's vote when the model was trained with it."""
    if not len(station_probs):
        return None
    probs = combine_station_probabilities(station_probs)
    if context is not None:
        probs = combine_models([probs[None], context[None]])[0]
    return probs


def catalog_context(classifier, events: pd.DataFrame) -> dict[str, np.ndarray]:
    """Event id -> the catalog-context probabilities of a model trained with
    ``context.enabled`` (from each event's origin time, longitude, depth and magnitude), or {}
    for a model trained on waveforms only."""
    models = getattr(classifier, "context_models", None)
    if not models or events.empty:
        return {}
    table = events.assign(origin_time=[utc_or_none(t) for t in events["origin_time"]]).rename(
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


def run_classification(
    classifier,
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
    progress: bool = True,
    amp: bool = False,
    ranks: Ranks = SINGLE,
    model_path: str | os.PathLike | None = None,
) -> ClassifySummary:
    """The whole job of ``scripts/classify.py``: catalog + waveforms -> predictions (+ QuakeML).

    ``classifier`` is a deployable classifier (``quake.load``), already on its device (under
    torchrun, this rank's GPU: ``ranks.device``); ``model_path``, where it was loaded from, is
    kept apart from the outputs.
    ``ranks`` (:class:`quake.runtime.Ranks`, from ``joined_ranks``) shards the
    catalog over torchrun's processes; rank 0 merges the parts, writes the QuakeML and returns
    the summary of the whole job, the other ranks their own share's.
    """
    if isinstance(classifier, (str, os.PathLike)):
        raise TypeError(
            f"run_classification takes a loaded classifier, got the path {str(classifier)!r}; "
            "expected quake.load(path)"
        )
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
            "--model": model_path,
        },
        in_place=[("--quakeml", "--catalog")] if in_place else [],
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with one_writer(out, ranks):
        if quakeml is not None:  # the obspy Catalog is annotated and written
            events, obspy_catalog = read_catalog_with_events(catalog, id_rule)
        else:
            events, obspy_catalog = read_catalog(catalog, id_rule, compact=True), None
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
        if not ranks.enabled:
            summary = classify_events(
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
        class_names = list(classifier.class_names)
        if quakeml is not None:
            predictions = read_predictions(out)  # the complete table, merged when sharded
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
        table = agreement_table(events, out, class_names)
        if not table.empty:
            write_csv_atomic(table.reset_index(), agreement_path(out))
            summary.agreement = {
                str(t): {str(p): int(n) for p, n in row.items()} for t, row in table.iterrows()
            }
        return summary


def _classify_sharded(classifier, events, source, out, stations_out, resume, ranks, options):
    """This rank's slice into its part files; then rank 0 merges every rank's parts."""
    shard = Shard.of(ranks)
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
    summary = classify_events(
        classifier, mine, source, part, stations_out=station_part, resume=resume,
        say_card=False, **options,
    )  # fmt: skip
    summaries = ranks.gather(summary)  # also the barrier: every part is complete after it
    if ranks.is_main:
        world = [Shard(r, shard.world_size) for r in range(shard.world_size)]
        ids = list(events["event_id"])
        merge_parts(out, [s.part_path(out) for s in world], ids)
        if stations_out is not None:
            parts = [s.part_path(stations_out) for s in world]
            merge_parts(stations_out, parts, ids, one_row_per_event=False)
        summary = merge_summaries(summaries, n_events=len(events))
        CardCheck.of(classifier).say(summary.card_check)  # once, for the whole catalog
    ranks.barrier()  # the other ranks leave once the output is merged
    return summary
