"""Station-day tasks: days of continuous data -> one detections table (and probability files).

The work is split into **station-days** (``NET.STA.LOC`` x UTC day, clipped to ``start``/
``end``). A task reads its station from the day's start to its end plus one window (so that the
windows starting late in the day are whole), annotates it (:mod:`quake.annotate.engine`), finds
its detections (:mod:`quake.annotate.detect`) and writes its own parts, each atomically, into
``<out>.parts/``: ``<key>.csv`` (its detections), the probability miniSEED where asked, and
last ``<key>.json`` (its counts), which marks it finished. ``resume`` skips the finished ones, so
a run killed at any moment goes on where it stopped and gives the same outputs. A task that
fails (an unreadable file) is logged and tried once more; if it fails again it is reported and
the others go on. The detections of the finished tasks are then merged into ``out``, and
where asked, associated across stations into events (:mod:`quake.annotate.events`).

Waveforms: an SDS archive (``YEAR/NET/STA/CHAN.TYPE/NET.STA.LOC.CHAN.TYPE.YEAR.DOY``, found by
its year folders) or a folder of miniSEED files (searched recursively; headers read once).
Tasks run in this process (``workers=0``) or in worker processes that die with this one
(:mod:`quake.processes`), each loading the model once (``loader(model_path)``).

Probability files: ``<dir>/<key>.mseed``, one trace per class at ``1 / stride``, skipped windows
left as gaps. miniSEED keeps three letters of a channel code, so class ``k`` is written as
channel ``Qkk`` (``Q00``, ``Q01``, ...) and ``<dir>/channels.json`` maps each code to the
SeisBench-style name (``quake_earthquake``); :func:`read_probabilities` gives the names back.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import obspy
import pandas as pd

from quake.annotate.detect import detection_columns, detections
from quake.annotate.engine import annotate_station, channel_code, stride_samples
from quake.annotate.events import (
    DEFAULT_MIN_STATIONS,
    DEFAULT_TOLERANCE_S,
    associate,
    check_association,
    write_events,
)
from quake.data.mseed import MSEED_SUFFIXES, read_mseed
from quake.data.readers.sds import DAY_S, day_files, parse_time
from quake.data.sources import detect_source_kind
from quake.processes import DieWithParent, initialize
from quake.runtime import OutputLock, inference_amp, write_atomic, write_text_atomic

logger = logging.getLogger(__name__)

CHANNELS_FILE = "channels.json"


@dataclass(frozen=True)
class StationDay:
    """One task: a station over ``[start, end)`` of one UTC day."""

    station: str  # NET.STA.LOC
    start: obspy.UTCDateTime
    end: obspy.UTCDateTime

    @property
    def key(self) -> str:
        """``NET.STA.LOC.YEAR.DOY``: the name of the task's parts."""
        return f"{self.station}.{self.start.year}.{self.start.julday:03d}"


# ---------------------------------------------------------------------------------- sources
class Waveforms:
    """Where a task's traces come from: an SDS archive, a folder of miniSEED files, or an FDSN
    web service (an ``http(s)://`` URL; its stations are those of ``stations``, patterns
    ``NET.STA.LOC`` as ``UW.*``, asked of its station service per day)."""

    def __init__(self, root: str | Path, start=None, end=None, stations: Sequence[str] = ()):
        self.files: list[tuple[str, obspy.UTCDateTime, obspy.UTCDateTime, Path]] = []
        if str(root).startswith(("http://", "https://")):
            self.kind, self.url, self.root = "fdsn", str(root).rstrip("/"), None
            if start is None or end is None or not stations:
                raise ValueError(
                    f"{self.url!r} is an FDSN service; expected --start, --end and --stations "
                    "(NET.STA.LOC patterns such as 'UW.*')"
                )
            self.stations = tuple(stations)
            return
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(
                f"waveforms {str(root)!r}: expected a folder (SDS or miniSEED files) or an FDSN URL"
            )
        self.kind = "sds" if detect_source_kind(str(self.root)) == "sds" else "folder"
        if self.kind == "folder":
            self.files = _index_folder(self.root)
            if not self.files:
                raise ValueError(
                    f"no miniSEED file ({', '.join(MSEED_SUFFIXES)}) in {str(self.root)!r}"
                )
        elif start is None or end is None:
            raise ValueError(f"{str(root)!r} is an SDS archive; expected --start and --end")

    def span(self) -> tuple[obspy.UTCDateTime, obspy.UTCDateTime]:
        """The time the folder's files cover (not asked of an SDS archive)."""
        return min(f[1] for f in self.files), max(f[2] for f in self.files)

    def _fdsn(self):
        """A client of the service; made where it is used (a worker), without the round trip
        that discovers the service's endpoints."""
        from obspy.clients.fdsn import Client

        return Client(self.url, _discover_services=False)

    def stations_on(self, day: obspy.UTCDateTime) -> list[str]:
        if self.kind == "sds":
            return sorted({".".join(p.name.split(".")[:3]) for p in day_files(self.root, day)})
        end = day + DAY_S
        if self.kind == "fdsn":
            return self._fdsn_stations(day, end)
        return sorted({s for s, t0, t1, _ in self.files if t0 < end and t1 >= day})

    def _fdsn_stations(self, day: obspy.UTCDateTime, end: obspy.UTCDateTime) -> list[str]:
        from obspy.clients.fdsn.header import FDSNNoDataException

        parts = [p.split(".") + ["*", "*"] for p in self.stations]
        try:
            inventory = self._fdsn().get_stations(
                network=",".join(sorted({p[0] for p in parts})),
                station=",".join(sorted({p[1] for p in parts})),
                starttime=day,
                endtime=end,
                level="channel",
            )
        except FDSNNoDataException:
            return []
        return sorted({f"{n.code}.{s.code}.{c.location_code}"
                       for n in inventory for s in n for c in s})  # fmt: skip

    def read(self, station: str, t0: obspy.UTCDateTime, t1: obspy.UTCDateTime) -> obspy.Stream:
        """The station's traces over ``[t0, t1]``; an unreadable file raises (the task fails)."""
        net, sta, loc = station.split(".")
        if self.kind == "fdsn":
            from obspy.clients.fdsn.header import FDSNNoDataException

            try:
                stream = self._fdsn().get_waveforms(net, sta, loc, "*", t0, t1)
            except FDSNNoDataException:
                stream = obspy.Stream()
        elif self.kind == "sds":
            from obspy.clients.filesystem.sds import Client

            stream = Client(str(self.root)).get_waveforms(net, sta, loc, "*", t0, t1)
        else:
            stream = obspy.Stream()
            for s, f0, f1, path in self.files:
                if s == station and f0 <= t1 and f1 >= t0:
                    stream += read_mseed(path)
        return stream.trim(t0, t1)


def _index_folder(root: Path) -> list[tuple[str, obspy.UTCDateTime, obspy.UTCDateTime, Path]]:
    """``(station, first sample, last sample, path)`` per trace of every miniSEED file."""
    index = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in MSEED_SUFFIXES or not path.is_file():
            continue
        try:
            headers = read_mseed(path, headonly=True)
        except Exception as err:  # an unreadable file is named, the others are used
            logger.warning("%s: unreadable miniSEED (%s); left out", path, err)
            continue
        for tr in headers:
            station = f"{tr.stats.network}.{tr.stats.station}.{tr.stats.location}"
            index.append((station, tr.stats.starttime, tr.stats.endtime, path))
    return index


def station_days(
    waveforms: Waveforms, start=None, end=None, patterns: Sequence[str] = ()
) -> list[StationDay]:
    """Every station-day with data in ``[start, end)`` whose ``NET.STA.LOC`` matches one of
    ``patterns`` (shell patterns, ``UW.*``; none: every station), by day then station."""
    if start is None or end is None:
        first, last = waveforms.span()
        start = first if start is None else start
        end = last if end is None else end
    t0, t1 = parse_time(start, "start"), parse_time(end, "end")
    if t1 <= t0:
        raise ValueError(f"end {t1} is not after start {t0}; expected a time range")
    tasks = []
    day = obspy.UTCDateTime(t0.date)
    while day < t1:
        for station in waveforms.stations_on(day):
            if patterns and not any(fnmatch.fnmatchcase(station, p) for p in patterns):
                continue
            tasks.append(StationDay(station, max(day, t0), min(day + DAY_S, t1)))
        day += DAY_S
    return tasks


# ---------------------------------------------------------------------------------- one task
def run_task(classifier, waveforms: Waveforms, task: StationDay, options: dict) -> dict:
    """Annotate one station-day and write its parts (module docstring); its counts."""
    config = classifier.config
    stride_s = stride_samples(config, options.get("stride_s")) / config.sampling_rate_hz
    end = task.end - stride_s + config.window_s  # the last window starts before task.end
    stream = waveforms.read(task.station, task.start, end)
    counts: dict[str, Any] = {"task": task.key, "windows": 0, "detections": 0, "skipped": {}}
    parts = Path(options["parts"])
    table = pd.DataFrame(columns=detection_columns(classifier.class_names))
    if len(stream):
        annotation = annotate_station(
            classifier, stream, stride_s=stride_s, start=task.start, end=end,
            batch_size=options.get("batch_size", 128), precision=options.get("precision", "auto"),
        )  # fmt: skip
        table = detections(
            [annotation], list(classifier.class_names), classifier.decision_thresholds,
            thresholds=options.get("thresholds"), min_duration_s=options.get("min_duration_s"),
        )  # fmt: skip
        counts.update(windows=annotation.n_windows, detections=len(table),
                      skipped=annotation.skip_counts())  # fmt: skip
        if options.get("probabilities"):
            write_probabilities(annotation.traces(), Path(options["probabilities"]), task.key)
    else:
        counts["skipped"] = {"station: no data": 1}
    write_atomic(parts / f"{task.key}.csv", lambda tmp: table.to_csv(tmp, index=False))
    write_text_atomic(parts / f"{task.key}.json", json.dumps(counts))
    return counts


def write_probabilities(traces: list[obspy.Trace], folder: Path, key: str) -> None:
    """``<folder>/<key>.mseed``: the traces with channel codes ``Qkk``, NaN stretches as gaps."""
    out = obspy.Stream()
    for k, tr in enumerate(traces):
        tr = tr.copy()
        tr.stats.channel = f"Q{k:02d}"
        tr.data = np.ma.masked_invalid(tr.data.astype(np.float32))
        out += tr.split()
    if len(out):
        write_atomic(folder / f"{key}.mseed", lambda tmp: out.write(str(tmp), format="MSEED"))


def read_probabilities(path: str | Path) -> obspy.Stream:
    """A probability file of :func:`write_probabilities` with its SeisBench-style channel names
    back (``quake_<class>``, from ``channels.json`` beside it)."""
    path = Path(path)
    names = json.loads((path.parent / CHANNELS_FILE).read_text())["channels"]
    stream = obspy.read(str(path))
    for tr in stream:
        tr.stats.channel = names.get(tr.stats.channel, tr.stats.channel)
    return stream


# ---------------------------------------------------------------------------------- the job
_worker: dict[str, Any] = {}


def _load_worker(loader: Callable, model_path: str, threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    _worker["classifier"] = loader(model_path)
    _worker["model_path"] = model_path


def _worker_task(waveforms: Waveforms, task: StationDay, options: dict) -> dict:
    return run_task(_worker["classifier"], waveforms, task, options)


def _dask_task(
    loader: Callable, model_path: str, waveforms: Waveforms, task: StationDay, options: dict
) -> dict:
    """One station-day on a Dask worker; the model is loaded once per worker process."""
    if _worker.get("model_path") != model_path:
        _load_worker(loader, model_path, threads=1)
    return _worker_task(waveforms, task, options)


@dataclass
class AnnotateSummary:
    """What a run did: tasks finished here or before (``resumed``), failed (key -> error),
    windows, detections and the skipped windows by reason."""

    tasks: int = 0
    finished: int = 0
    resumed: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    windows: int = 0
    detections: int = 0
    skipped: Counter = field(default_factory=Counter)
    events: int | None = None  # associated, where asked

    def add(self, counts: dict) -> None:
        self.windows += counts["windows"]
        self.detections += counts["detections"]
        self.skipped.update(counts["skipped"])


def parts_folder(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def annotate_days(
    classifier,
    waveforms: str | Path,
    out: str | Path,
    *,
    start=None,
    end=None,
    stations: Sequence[str] = (),
    resume: bool = False,
    workers: int = 0,
    loader: Callable | None = None,
    model_path: str | None = None,
    scheduler: str | None = None,
    progress: Callable[[AnnotateSummary], None] | None = None,
    events_out: str | Path | None = None,
    min_stations: int | None = None,
    tolerance_s: float | None = None,
    **options: Any,
) -> AnnotateSummary:
    """The job of the module docstring: detections of every station-day into ``out`` (CSV),
    and where ``events_out`` is given, the events associated from them
    (:mod:`quake.annotate.events`: ``min_stations`` within ``tolerance_s``, None: its
    defaults) into it.
    ``options``: ``stride_s``, ``batch_size``, ``precision``, ``thresholds``, ``min_duration_s``,
    ``probabilities`` (a folder). ``workers`` > 0 needs ``loader`` and ``model_path``, and so
    does ``scheduler``: the address of a Dask distributed scheduler that runs the station-days
    instead (its workers must see ``out``'s folder and the waveforms at the same paths)."""
    out = Path(out)
    min_stations = DEFAULT_MIN_STATIONS if min_stations is None else min_stations
    tolerance_s = DEFAULT_TOLERANCE_S if tolerance_s is None else tolerance_s
    check_association(min_stations, tolerance_s)
    inference_amp(options.get("precision", "auto"), classifier.device)  # a bad value stops here
    if events_out is not None and Path(events_out).resolve() == out.resolve():
        raise ValueError(f"events_out {str(events_out)!r} is the detections file; expected "
                         "another path")  # fmt: skip
    source = Waveforms(waveforms, start, end, stations)
    tasks = station_days(source, start, end, stations)
    parts = parts_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with OutputLock(out.with_name(out.name + ".lock"), f"detections {str(out)!r}"):
        if parts.exists() and not resume:
            raise ValueError(
                f"{str(parts)!r} holds the parts of an earlier run; expected --resume to go on "
                "with it, or remove it to start again"
            )
        parts.mkdir(exist_ok=True)
        options = {**options, "parts": str(parts)}
        if options.get("probabilities"):
            _write_channels(Path(options["probabilities"]), classifier)
        summary = AnnotateSummary(tasks=len(tasks))
        todo = []
        for task in tasks:
            done = parts / f"{task.key}.json"
            if done.is_file():
                summary.resumed += 1
                summary.add(json.loads(done.read_text()))
            else:
                todo.append(task)
        _run_tasks(classifier, source, todo, options, summary, workers, loader, model_path,
                   progress, scheduler)  # fmt: skip
        finished = [t for t in tasks if (parts / f"{t.key}.json").is_file()]
        table = merge_parts(parts, finished, out, classifier.class_names)
        if events_out is not None:
            names = list(classifier.class_names)
            events = associate(table, names, classifier.decision_thresholds,
                               min_stations=min_stations, tolerance_s=tolerance_s)  # fmt: skip
            write_events(events, events_out, names, classifier.model_id)
            summary.events = len(events)
    return summary


def _write_channels(folder: Path, classifier) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = {f"Q{k:02d}": channel_code(c) for k, c in enumerate(classifier.class_names)}
    text = json.dumps({"model_id": classifier.model_id, "channels": names}, indent=1)
    write_text_atomic(folder / CHANNELS_FILE, text)


def _run_tasks(
    classifier, source, todo, options, summary, workers, loader, model_path, progress,
    scheduler=None,
):  # fmt: skip
    """Each task run (in workers or on a Dask cluster where asked), a failure tried once more,
    then reported."""

    def finished(counts: dict) -> None:
        summary.finished += 1
        summary.add(counts)
        if progress:
            progress(summary)

    attempts: Counter = Counter()
    if workers <= 0:
        for task in todo:
            while True:
                try:
                    finished(run_task(classifier, source, task, options))
                    break
                except Exception as err:
                    if not _retry(task, err, attempts, summary):
                        break
        return
    if loader is None or model_path is None:
        raise ValueError(
            "workers > 0 or a scheduler needs a loader and a model_path to load the model there"
        )
    if scheduler is not None:
        _run_on_dask(scheduler, source, todo, options, loader, model_path, attempts, summary,
                     finished)  # fmt: skip
        return
    import multiprocessing

    threads = 1
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=initialize,
        initargs=(DieWithParent(), _load_worker, loader, str(model_path), threads),
    ) as pool:
        pending = {pool.submit(_worker_task, source, t, options): t for t in todo}
        while pending:
            future = next(as_completed(pending))
            task = pending.pop(future)
            try:
                finished(future.result())
            except Exception as err:
                if _retry(task, err, attempts, summary):
                    pending[pool.submit(_worker_task, source, task, options)] = task


def _run_on_dask(
    scheduler: str, source, todo, options, loader, model_path, attempts, summary, finished
) -> None:
    """The station-days as tasks of the Dask distributed scheduler at ``scheduler`` (any
    cluster Dask reaches: dask-jobqueue on HPC, Kubernetes, a ``LocalCluster``)."""
    try:
        from dask.distributed import Client
        from dask.distributed import as_completed as dask_completed
    except ImportError as err:
        raise ValueError(
            f"--scheduler {scheduler!r} needs Dask distributed; expected it installed "
            "(pip install 'quake-seismic[dask]')"
        ) from err

    def submit(task: StationDay):
        return client.submit(_dask_task, loader, str(model_path), source, task, options,
                             pure=False)  # fmt: skip

    with Client(scheduler) as client:
        tasks = {submit(t): t for t in todo}
        pending = dask_completed(list(tasks))
        for future in pending:
            task = tasks.pop(future)
            try:
                finished(future.result())
            except Exception as err:
                if _retry(task, err, attempts, summary):
                    again = submit(task)
                    tasks[again] = task
                    pending.add(again)


def _retry(task: StationDay, err: Exception, attempts: Counter, summary: AnnotateSummary) -> bool:
    """Log a failed task; True when it gets a second try, else it is reported as failed."""
    attempts[task.key] += 1
    if attempts[task.key] < 2:
        logger.warning("%s failed (%s: %s); trying once more", task.key, type(err).__name__, err)
        return True
    logger.error("%s failed twice (%s: %s); reported, the others go on", task.key,
                 type(err).__name__, err)  # fmt: skip
    summary.failed[task.key] = f"{type(err).__name__}: {err}"
    return False


def merge_parts(
    parts: Path, tasks: Sequence[StationDay], out: Path, class_names: Sequence[str]
) -> pd.DataFrame:
    """The detections of ``tasks`` (their parts) into ``out``, sorted by start and station;
    the table written."""
    tables = [pd.read_csv(parts / f"{t.key}.csv", dtype={"flags": str}) for t in tasks]
    tables = [t for t in tables if len(t)]
    columns = detection_columns(class_names)
    table = pd.concat(tables) if tables else pd.DataFrame(columns=columns)
    table = table.sort_values(["start", "station", "class"], kind="stable")
    table["flags"] = table["flags"].fillna("")
    write_atomic(out, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"))
    return table.reset_index(drop=True)


def remove_parts(out: str | Path) -> None:
    """Remove the parts folder of ``out`` (a run started again from scratch)."""
    shutil.rmtree(parts_folder(Path(out)), ignore_errors=True)
