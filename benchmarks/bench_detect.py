"""Benchmark detection on real recordings: recall and false detections per hour.

    python benchmarks/bench_detect.py [--model runs/my-run] [--unlabelled 100] [--threads 2]

Known times (``$QUAKE_REAL_DATA`` or ``../shared/data/real``):

- ``pnw-eqex`` and ``unlabelled-pnw``: each 150 s record holds one catalogued event 50 s after
  its start (unlabelled-pnw's time is approximate: the earliest trace start + 50 s). All the
  records of an event are annotated together (``annotate_stream``, the default stride), their
  detections found (``detections``) and associated into events (``associate``, the defaults:
  2 stations within 30 s).
- ``eqnoise-3c-checked``: each recording's noise window (the 29 s before P - 1 s) followed by its
  earthquake window from P - 1 s on: 54 s of continuous 3-component 100 Hz data, P at 30 s. Only
  recordings whose noise window holds no arrival (the checked set) are used.

Counted per station record: a **hit** is a detection whose onset lies from 2 s before the P
pick to 3 s after it (eqnoise), or from 2 s before the origin to 60 s after it (pnw: the P
arrival follows the origin by the travel time); **false** detections are those whose onset lies
before that (the stretch from the record's start plus the 10 s STA/LTA LTA, before which no
trigger can start, to the hit window: noise, known to hold no catalogued event), per hour of
that stretch. After the hit window, coda and later phases are neither hits nor false. Events
(pnw): an associated event whose time lies from 10 s before the origin to 60 s after it finds
the event; one before that is false, per hour of the events' pre-origin stretches.

Class agreement (pnw-eqex): for each found event, its class against what ``quake classify``
gives for the event from the catalogue's origin time (``classify_stream``: windows at the origin
time, every station with data) and against the catalogue's type.

Without ``--model`` the model is a random-init tiny HybridViT (earthquake, explosion), as in the
tests: a model without ``noise`` detects by STA/LTA proposals, so recall and false detections
do not depend on its weights, while the class figures are meaningless. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

#: Hit windows around the known time (seconds): eqnoise (P pick), pnw (origin).
P_HIT = (-2.0, 3.0)
ORIGIN_HIT = (-2.0, 60.0)
EVENT_HIT = (-10.0, 60.0)


def tiny_classifier():
    import torch

    from quake.data import PreprocessConfig
    from quake.deploy.ensemble import EventClassifier
    from quake.models import HybridViT

    torch.manual_seed(0)
    config = PreprocessConfig()
    model = HybridViT(depth=1, img_size=config.spectrogram_shape[1:],
                      class_names=["earthquake", "explosion"])  # fmt: skip
    return EventClassifier([model], config)


class Counts:
    """Hits, records, false detections and the noise hours searched."""

    def __init__(self):
        self.records = self.hits = self.false = 0
        self.noise_s = 0.0

    def add(self, onsets, known, record_start, hit) -> None:
        from quake.data.onsets import LTA_S

        self.records += 1
        rel = [t - known for t in onsets]
        self.hits += any(hit[0] <= r <= hit[1] for r in rel)
        self.false += sum(r < hit[0] for r in rel)
        self.noise_s += max(0.0, (known + hit[0]) - (record_start + LTA_S))

    def row(self, label: str) -> str:
        hours = self.noise_s / 3600
        recall = self.hits / max(self.records, 1)
        per_hour = self.false / hours if hours else float("nan")
        return (f"| {label} | {self.records} | {recall:.1%} | {self.false} | {hours:.2f} | "
                f"{per_hour:.0f} |")  # fmt: skip


def eqnoise(clf, real: Path, counts: Counts) -> None:
    import h5py
    import obspy
    import pandas as pd

    from quake.annotate import annotate_station, detections

    folder = real / "eqnoise-3c-checked"
    meta = pd.read_csv(folder / "metadata.csv")
    pairs = meta.pivot_table(index="source_id", columns="source_type", values="trace_name",
                             aggfunc="first").dropna()  # fmt: skip
    t0 = obspy.UTCDateTime("2021-03-01")
    with h5py.File(folder / "waveforms.hdf5", "r") as f:
        for _, row in pairs.iterrows():
            info = meta[meta["trace_name"] == row["earthquake"]].iloc[0]
            p = int(info["trace_p_arrival_sample"])
            noise = f["data"][row["noise"]][()]  # ends 1 s (100 samples) before P
            data = np.concatenate([noise, f["data"][row["earthquake"]][()][:, p - 100 :]], axis=1)
            stream = obspy.Stream([
                obspy.Trace(data[k].astype(np.float64), {
                    "network": info["station_network_code"], "station": info["station_code"],
                    "channel": f"HH{c}", "sampling_rate": 100.0, "starttime": t0})
                for k, c in enumerate("ZNE") if data[k].any()
            ])  # fmt: skip
            annotation = annotate_station(clf, stream)
            table = detections([annotation], list(clf.class_names), clf.decision_thresholds)
            onsets = [obspy.UTCDateTime(t) for t in table["onset"]]
            counts.add(onsets, t0 + (noise.shape[1] + 100) / 100, t0, P_HIT)


def pnw_set(clf, folder: Path, limit: int | None, stations: Counts, events: Counts, agree: list):
    import obspy
    import pandas as pd

    from quake.annotate import annotate_stream, associate, detections

    catalog = pd.read_csv(folder / "catalog.csv")
    if limit:
        catalog = catalog.head(limit)
    names = list(clf.class_names)
    for event in catalog.itertuples():
        files = sorted((folder / "waveforms" / event.event_id).glob("*.mseed"))
        stream = obspy.Stream()
        for path in files:
            stream += obspy.read(str(path))
        if not len(stream):
            continue
        origin = obspy.UTCDateTime(event.time)
        start = min(tr.stats.starttime for tr in stream)
        _, annotations = annotate_stream(clf, stream)
        table = detections(annotations, names, clf.decision_thresholds)
        for annotation in annotations:
            if annotation.n_windows:
                mine = table[table["station"] == annotation.station]
                onsets = [obspy.UTCDateTime(t) for t in mine["onset"]]
                stations.add(onsets, origin, annotation.first_start, ORIGIN_HIT)
        found = associate(table, names, clf.decision_thresholds)
        times = [obspy.UTCDateTime(t) for t in found["time"]]
        events.add(times, origin, start, EVENT_HIT)
        hits = found[[EVENT_HIT[0] <= t - origin <= EVENT_HIT[1] for t in times]]
        if len(hits) and hasattr(event, "event_type"):
            result = clf.classify(stream, origin_time=origin)
            agree.append((hits.iloc[0]["class"], result.predicted_class, event.event_type))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a quake model or run folder (default: random tiny)")
    parser.add_argument("--unlabelled", type=int, default=100,
                        help="unlabelled-pnw events used (the first N; 0: none)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    from quake.deploy import load

    torch.set_num_threads(args.threads)
    clf = load(args.model) if args.model else tiny_classifier()
    real = Path(os.environ.get("QUAKE_REAL_DATA", Path(__file__).parents[2] / "shared/data/real"))
    t = time.perf_counter()
    rows_station, rows_event, agree = [], [], []
    counts = Counts()
    eqnoise(clf, real, counts)
    rows_station.append(counts.row("eqnoise-3c-checked (P pick)"))
    for name, limit in (("pnw-eqex", None), ("unlabelled-pnw", args.unlabelled)):
        if limit == 0:
            continue
        stations, events = Counts(), Counts()
        pnw_set(clf, real / name, limit, stations, events, agree if name == "pnw-eqex" else [])
        rows_station.append(stations.row(f"{name} (origin)"))
        rows_event.append(events.row(f"{name}: events, >= 2 stations within 30 s"))
    print(
        f"model {args.model or 'random-init tiny HybridViT (earthquake, explosion)'}; "
        f"{time.perf_counter() - t:.0f} s\n"
    )
    print("| set | records (events) | recall | false | noise hours | false per hour |")
    print("|---|---|---|---|---|---|")
    for row in rows_station + rows_event:
        print(row)
    if agree:
        same = sum(a == b for a, b, _ in agree)
        right = sum(a == c for a, _, c in agree)
        print(
            f"\nfound pnw-eqex events: {len(agree)}; class as quake classify (origin time): "
            f"{same}/{len(agree)}; as the catalogue: {right}/{len(agree)}"
        )


if __name__ == "__main__":
    main()
