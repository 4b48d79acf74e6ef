#!/usr/bin/env python
"""Benchmark batch classification end to end against the model alone, in the same run.

    python benchmarks/bench_classify.py                 # 2000 synthetic events x 5 stations
    python benchmarks/bench_classify.py --quick         # 200 events
    python benchmarks/bench_classify.py --model runs/my-run --workers 0 1 --json bench.json

A catalog of synthetic events is written the way a network operator keeps one: QuakeML with
a P pick per station, and ``waveforms/<event_id>/NET.STA.LOC.CHA.mseed`` (one Steim-2 file per
channel, 60 s at 100 Hz). Records come from ``quake.data.synthetic.synthesize_event`` (a pool
of distinct records, re-used across events: the benchmark measures reading and compute, not the
physics). The batch job then classifies every event (``classify_events``), and the same
classifier is timed alone on random windows at the same batch size (``predict_proba``:
spectrogram + network) and, for the network alone, with ``benchmarks/model_throughput.py``.
Aim: end-to-end windows/s >= 0.5 x model-only windows/s. Each setting also runs with the
quality checks of every channel turned off (``--quality on off``), so that their cost on
end-to-end throughput is a ratio measured in one run (aim: at most 10 %).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import obspy
import torch
from obspy.core.event import (
    Catalog,
    Event,
    Origin,
    Pick,
    ResourceIdentifier,
    WaveformStreamID,
)

from quake.classify import classify_events, open_source, read_catalog
from quake.data import PreprocessConfig
from quake.data.synthetic import VP_KM_S, synthesize_event
from quake.deploy.ensemble import EventClassifier
from quake.models import Backbone, HybridViT
from quake.runtime import autocast_for

from model_throughput import measure_inference, time_call
from quality_checks import quality_checks_off

EVENT_TYPES = ("earthquake", "explosion")
NETWORK = "BX"
STAMP = "bench_classify.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="catalog events")
    parser.add_argument("--stations", type=int, default=5, help="stations per event")
    parser.add_argument("--pool", type=int, default=200, help="distinct synthetic records")
    parser.add_argument("--duration-s", type=float, default=60.0, help="seconds per record")
    parser.add_argument("--quick", action="store_true", help="200 events, one worker setting")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 0],
        help="reader worker settings to run (0: read in the main process)",
    )
    parser.add_argument(
        "--model", default=None, help="run or model folder; default a random-init TINY HybridViT"
    )
    parser.add_argument(
        "--amp",
        nargs="+",
        choices=["off", "on"],
        default=["off"],
        help="mixed-precision settings to run (on: bf16 autocast on CPU), e.g. --amp off on",
    )
    parser.add_argument(
        "--quality",
        nargs="+",
        choices=["on", "off"],
        default=["on", "off"],
        help="quality-check settings to run (off: every channel inspection skipped), to price them",
    )
    parser.add_argument("--depth", type=int, default=4, help="depth of the random-init model")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the synthetic catalog is written (kept and re-used); default a temp dir",
    )
    parser.add_argument("--json", default=None, help="write all figures to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.pool, args.workers = 200, 60, args.workers[:1]
    for name in ("events", "stations", "pool", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def build_classifier(args: argparse.Namespace) -> EventClassifier:
    if args.model:
        return EventClassifier.load(args.model)
    torch.manual_seed(0)
    config = PreprocessConfig()
    model = HybridViT(backbone=Backbone.TINY, depth=args.depth, num_classes=len(EVENT_TYPES),
                      img_size=config.spectrogram_shape[1:], class_names=list(EVENT_TYPES))  # fmt: skip
    return EventClassifier([model], config, model_id=f"random-tiny-d{args.depth}")


def _record_pool(
    n: int, rate_hz: float, duration_s: float, seed: int = 0
) -> list[tuple[np.ndarray, dict]]:
    rng = np.random.default_rng(seed)
    pool = []
    for i in range(n):
        event_type = EVENT_TYPES[i % len(EVENT_TYPES)]
        magnitude = rng.uniform(1.0, 3.0)
        depth_km = rng.uniform(0.0, 0.5) if event_type == "explosion" else rng.uniform(2.0, 15.0)
        x, meta = synthesize_event(rng, event_type, distance_km=rng.uniform(5, 80), magnitude=magnitude,
                                   depth_km=depth_km, snr_db=rng.uniform(5, 25),
                                   sampling_rate_hz=rate_hz, duration_s=duration_s)  # fmt: skip
        peak = float(np.abs(x).max()) or 1.0
        counts = np.round(x * (2.0**20 / peak)).astype(np.int32)  # integer counts, as recorded
        pool.append((counts, meta))
    return pool


def write_catalog(
    root: Path, n_events: int, n_stations: int, n_pool: int, duration_s: float
) -> Path:
    """Write (or re-use) ``root/catalog.xml`` + ``root/waveforms/<event_id>/*.mseed``."""
    params = {
        "events": n_events,
        "stations": n_stations,
        "pool": n_pool,
        "duration_s": duration_s,
        "version": 1,
    }
    stamp = root / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        print(f"re-using the synthetic catalog in {root}", flush=True)
        return root / "catalog.xml"
    shutil.rmtree(root, ignore_errors=True)
    rate = 100.0
    t = time.perf_counter()
    pool = _record_pool(n_pool, rate, duration_s)
    rng = np.random.default_rng(1)
    catalog = Catalog(resource_id=ResourceIdentifier("smi:local/bench/catalog"))
    base = obspy.UTCDateTime(2024, 1, 1)
    for e in range(n_events):
        event_id = f"bx{e:06d}"
        folder = root / "waveforms" / event_id
        folder.mkdir(parents=True)
        event = Event(resource_id=ResourceIdentifier(f"smi:local/event/{event_id}"))
        origin_time = base + 3600.0 * e + rng.uniform(0, 600)
        stations = rng.choice(300, size=n_stations, replace=False)
        for s in stations:
            counts, meta = pool[int(rng.integers(len(pool)))]
            travel = np.hypot(meta["path_ep_distance_km"], meta["source_depth_km"]) / VP_KM_S
            p_offset = meta["trace_p_arrival_sample"] / rate
            start = origin_time + travel - p_offset
            station = f"S{int(s):03d}"
            for k, component in enumerate("ZNE"):
                header = {"network": NETWORK, "station": station, "location": "", "channel": "HH" + component,
                          "sampling_rate": rate, "starttime": start}  # fmt: skip
                trace = obspy.Trace(counts[k].copy(), header=header)
                trace.write(str(folder / f"{NETWORK}.{station}..HH{component}.mseed"), format="MSEED",
                            encoding="STEIM2")  # fmt: skip
            event.picks.append(Pick(time=start + p_offset, phase_hint="P",
                                    waveform_id=WaveformStreamID(NETWORK, station, "", "HHZ")))  # fmt: skip
        origin = Origin(time=origin_time, latitude=45.0, longitude=-122.0, depth=5000.0)
        event.origins.append(origin)
        event.preferred_origin_id = origin.resource_id
        catalog.events.append(event)
    catalog.write(str(root / "catalog.xml"), format="QUAKEML")
    stamp.write_text(json.dumps(params))
    print(f"wrote {n_events} events x {n_stations} stations x 3 channels in {time.perf_counter() - t:.0f} s",
          flush=True)  # fmt: skip
    return root / "catalog.xml"


def model_only(
    classifier: EventClassifier, batch_size: int, repeats: int = 6, amp: bool = False
) -> float:
    """Windows/s of ``predict_proba`` (spectrogram + network) on random windows, median batch."""
    x = torch.randn(batch_size, 3, classifier.window_samples)

    def call():
        with autocast_for(classifier.device, amp):
            classifier.predict_proba(x, batch_size=batch_size)

    timing = time_call(call, repeats)
    return batch_size / timing.median_s


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    classifier = build_classifier(args)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="quake-bench-classify-"))
    try:
        catalog_path = write_catalog(
            workdir, args.events, args.stations, args.pool, args.duration_s
        )
        t = time.perf_counter()
        events = read_catalog(catalog_path)
        print(f"catalog read in {time.perf_counter() - t:.1f} s ({len(events)} events)", flush=True)
        source = open_source(str(workdir))
        img_size = classifier.config.spectrogram_shape[1:]
        member = classifier.models[0]
        network = measure_inference(Backbone.from_name(member.init_kwargs["backbone"]), member.init_kwargs["depth"],
                                    args.batch_size, img_size, repeats=6)  # fmt: skip
        results = {"events": len(events), "stations_per_event": args.stations, "batch_size": args.batch_size,
                   "model_id": classifier.model_id, "network_only_windows_per_s": network.windows_per_s,
                   "runs": []}  # fmt: skip
        print(f"network only (model_throughput.py, batch {args.batch_size}): "
              f"{network.windows_per_s:.1f} windows/s", flush=True)  # fmt: skip
        settings = [(w, amp == "on", q == "on") for w in args.workers for amp in args.amp
                    for q in args.quality]  # fmt: skip
        for workers, amp, checks in settings:
            before = model_only(classifier, args.batch_size, amp=amp)
            out = (
                workdir
                / f"predictions-w{workers}{'-amp' if amp else ''}{'' if checks else '-noqc'}.csv"
            )
            with contextlib.nullcontext() if checks else quality_checks_off():
                summary = classify_events(classifier, events, source, out, batch_size=args.batch_size,
                                           workers=workers, progress=True, amp=amp)  # fmt: skip
            after = model_only(classifier, args.batch_size, amp=amp)
            model_wps = (before + after) / 2
            total = summary.total_s
            run = {
                "workers": workers,
                "amp": amp,
                "quality_checks": checks,
                **summary.to_dict(),
                "model_only_windows_per_s": model_wps,
                "model_only_before_after": [before, after],
                "ratio_to_model_only": summary.windows_per_s / model_wps,
            }
            results["runs"].append(run)
            print(
                f"\nworkers={workers}, amp={'on (bf16)' if amp else 'off'}, quality checks {'on' if checks else 'off'}: {summary.n_events} events, {summary.n_windows} windows in {total:.1f} s -> "
                f"{summary.events_per_s:.1f} events/s, {summary.windows_per_s:.1f} windows/s end to end\n"
                f"  model only (predict_proba, batch {args.batch_size}, same run): {model_wps:.1f} windows/s "
                f"(before {before:.1f}, after {after:.1f}) -> end to end = {run['ratio_to_model_only']:.2f} x model only\n"
                f"  time, as share of the wall time: reading {summary.read_s:.1f} s ({summary.read_s / total:.0%}), "
                f"preprocessing {summary.preprocess_s:.1f} s ({summary.preprocess_s / total:.0%})"
                f"{' [in the reader worker, overlapping the model]' if workers else ''}, "
                f"model {summary.model_s:.1f} s ({summary.model_s / total:.0%}), "
                f"main waiting for data {summary.wait_s:.1f} s ({summary.wait_s / total:.0%})",
                flush=True,
            )
            if summary.skip_counts:
                print(f"  skipped: {dict(summary.skip_counts)}", flush=True)
        for on in results["runs"]:
            off = [r for r in results["runs"] if not r["quality_checks"] and r["workers"] == on["workers"]
                   and r["amp"] == on["amp"]]  # fmt: skip
            if on["quality_checks"] and off:
                cost = 1 - on["events_per_s"] / off[0]["events_per_s"]
                on["quality_cost"] = cost
                print(f"quality checks, workers={on['workers']}, amp={'on' if on['amp'] else 'off'}: "
                      f"{on['events_per_s']:.2f} vs {off[0]['events_per_s']:.2f} events/s without them "
                      f"-> they cost {cost:.1%} of end-to-end throughput", flush=True)  # fmt: skip
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
