#!/usr/bin/env python
"""Benchmark the data side: spectrograms/s through the adapter, and memory while streaming.

1. Throughput. A SeisBench-format set is written to disk; spectrograms are computed from it
   through the adapter (HDF5 read + trimming + z-score + STFT), per item (``adapter[i]``, what a
   DataLoader does) and per batch (``adapter.spectrograms``), and beside them a bare
   ``torch.stft`` (magnitude) on the same windows already in memory, in the same run. The ratio
   adapter / bare is the figure that matters; absolute numbers depend on the machine. The
   batched stream runs again with the per-channel quality inspection off, pricing the checks.
2. Memory. Sets of growing size (up to 50,000 traces, bucketed) are streamed through the adapter
   (construction pass + all spectrograms), each in a fresh process; its peak RSS (VmHWM) must
   stay flat as the set grows.

3. Scale (``--scale``). One bucketed set of 1,000,000 short traces (3 s at 50 Hz, a 2.56 s
   window, 17 x 7 spectrograms: ~1.9 GB on disk) and its first 10,000 and 100,000 rows; each is
   opened, checked by the adapter and streamed (batched reads, ``adapter.spectrograms``) in a
   fresh process, optionally also through a DataLoader with worker processes. Reported per
   size: time per stage, RSS after each stage, peak RSS, and the metadata table's bytes per
   trace (what grows with the set: the waveforms are never held). The sets are deleted after.

4. Training window cache (``--train-cache``). Sets of 20,000 and 100,000 traces with the
   training preprocessing (2048-sample windows, 24.6 kB each); per size and per
   ``run.window_cache`` (memory, disk), a fresh process runs training's ``load_data`` and then
   scores one fold's validation and test windows (``probabilities_at``, a one-block model).
   Reported: ru_maxrss (peak resident set, which counts mapped file pages that were read: page
   cache, reclaimable, not memory the process owns) and the peak of anonymous memory (RssAnon,
   sampled every 10 ms: what the process really holds), and their disk / memory ratios.

    python benchmarks/bench_data.py            # full run (writes ~1.3 GB under a temp folder)
    python benchmarks/bench_data.py --quick    # a short run
    python benchmarks/bench_data.py --scale    # 10k / 100k / 1M traces (~1.9 GB, a few minutes)
    python benchmarks/bench_data.py --scale --sizes 10000 100000 --loader-workers 2
    python benchmarks/bench_data.py --train-cache  # 20k / 100k traces (~6 GB of disk at most)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from quake.data import PreprocessConfig, SeisBenchWriter, WaveformDataAdapter, open_dataset

from quality_checks import quality_checks_off

TRACE_SECONDS = 24.0  # a bit longer than the 20.48 s window, so trimming really cuts


def write_set(
    path: Path,
    n_traces: int,
    config: PreprocessConfig,
    bucket_size: int,
    seed: int = 0,
    trace_seconds: float = TRACE_SECONDS,
    p_sample_range: tuple[int, int] = (300, 500),
) -> Path:
    """A SeisBench-format set of random three-component traces, written bucket by bucket.

    Three stations per event; the columns a real set has (station, channel, magnitude) are
    there, so the metadata table weighs what a real one of the same length would.
    """
    rng = np.random.default_rng(seed)
    n = int(round(trace_seconds * config.sampling_rate_hz))
    pool = rng.normal(size=(64, 3, n)).astype(np.float32)  # reused to keep generation cheap
    classes = ("earthquake", "explosion", "noise")
    p_lo, p_hi = p_sample_range
    stations = [f"S{k:03d}" for k in range(250)]
    with SeisBenchWriter(
        path, config.sampling_rate_hz, bucket_size=bucket_size, overwrite=True
    ) as writer:
        for i in range(n_traces):
            waveform = pool[i % len(pool)] * np.float32(1.0 + (i % 7))
            writer.add(
                f"t{i}",
                waveform,
                source_id=f"ev{i // 3}",
                source_type=classes[(i // 3) % 3],
                source_magnitude=round(1.0 + (i // 3) % 40 / 10, 1),
                station_network_code=("UW", "CC", "UO", "PB")[i % 4],
                station_code=stations[(i * 7) % len(stations)],
                trace_channel=("HH", "EH", "BH")[i % 3],
                trace_p_arrival_sample=p_lo + (i % (p_hi - p_lo)),
            )
    return path


def subset_set(full: Path, path: Path, n_traces: int) -> Path:
    """A set of the first ``n_traces`` rows of ``full``, sharing its HDF5 file."""
    path.mkdir(parents=True, exist_ok=True)
    pd.read_csv(full / "metadata.csv", nrows=n_traces).to_csv(path / "metadata.csv", index=False)
    target = path / "waveforms.hdf5"
    if not target.exists():
        target.symlink_to((full / "waveforms.hdf5").resolve())
    return path


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def throughput(path: Path, config: PreprocessConfig, batch_size: int, repeats: int) -> dict:
    dataset = open_dataset(path, config)
    with quality_checks_off():
        t = time.perf_counter()
        WaveformDataAdapter(dataset, config=config)
        construct_off_s = time.perf_counter() - t
    t = time.perf_counter()
    adapter = WaveformDataAdapter(dataset, config=config)
    construct_s = time.perf_counter() - t
    n = len(adapter)

    def best_of(fn) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    def per_item():
        for i in range(n):
            adapter[i]

    def batched():
        for start in range(0, n, batch_size):
            adapter.spectrograms(np.arange(start, min(start + batch_size, n)))

    windows = torch.from_numpy(adapter.load_waveforms())
    window_fn = torch.hann_window(config.stft_nperseg)

    def bare_stft(magnitude: bool):
        for start in range(0, n, batch_size):
            x = windows[start : start + batch_size]
            spec = torch.stft(
                x.reshape(-1, x.shape[-1]),
                n_fft=config.stft_nperseg,
                hop_length=config.stft_hop,
                window=window_fn,
                center=False,
                return_complex=True,
            )
            if magnitude:
                spec.abs()

    def read_only():
        adapter.load_waveforms()

    per_item_s = best_of(per_item)
    batched_s = best_of(batched)
    with quality_checks_off():  # the same stream without the per-channel inspection
        batched_off_s = best_of(batched)
    bare_s = best_of(lambda: bare_stft(True))
    bare_complex_s = best_of(lambda: bare_stft(False))
    read_s = best_of(read_only)
    return {
        "traces": n,
        "construct_s": construct_s,
        "construct_no_quality_s": construct_off_s,
        "adapter_per_item_per_s": n / per_item_s,
        "adapter_batched_per_s": n / batched_s,
        "adapter_batched_no_quality_per_s": n / batched_off_s,
        "read_and_trim_per_s": n / read_s,
        "bare_stft_per_s": n / bare_s,
        "bare_stft_complex_per_s": n / bare_complex_s,
    }


def stream_child(path: Path, batch_size: int) -> None:
    """Run in a fresh process: stream one set through the adapter, print JSON with peak RSS."""
    baseline = peak_rss_mb()
    config = PreprocessConfig()
    t = time.perf_counter()
    dataset = open_dataset(path, config)
    adapter = WaveformDataAdapter(dataset, config=config)
    checksum = 0.0
    for start in range(0, len(adapter), batch_size):
        spec = adapter.spectrograms(np.arange(start, min(start + batch_size, len(adapter))))
        checksum += float(spec[:, 0, 0, 0].sum())
    print(
        json.dumps(
            {
                "traces": len(adapter),
                "dropped": len(adapter.dropped),
                "seconds": time.perf_counter() - t,
                "baseline_rss_mb": baseline,
                "peak_rss_mb": peak_rss_mb(),
                "checksum": checksum,
            }
        )
    )


# The --scale sets: short traces and a small window, so 1M traces fit in ~2 GB.
SCALE_CONFIG = PreprocessConfig(
    sampling_rate_hz=50.0, window_s=2.56, pre_arrival_s=0.5, stft_nperseg=32, stft_hop=16
)
SCALE_TRACE_SECONDS = 3.0
SCALE_P_SAMPLES = (30, 40)  # P picks inside the first second: every window fits
SCALE_SIZES = [10_000, 100_000, 1_000_000]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def table_bytes(table: pd.DataFrame) -> int:
    return int(table.memory_usage(deep=True, index=True).sum())


def scale_child(path: Path, batch_size: int, loader_workers: int) -> None:
    """Run in a fresh process: open, check and stream one --scale set; print JSON."""
    import resource

    config = SCALE_CONFIG
    out: dict = {"baseline_rss_mb": rss_mb()}
    t = time.perf_counter()
    dataset = open_dataset(path, config)
    out["open_s"] = time.perf_counter() - t
    out["open_rss_mb"] = rss_mb()
    out["traces"] = len(dataset)
    out["metadata_bytes_per_trace"] = table_bytes(dataset.metadata) / len(dataset)
    t = time.perf_counter()
    adapter = WaveformDataAdapter(dataset, config=config)
    out["construct_s"] = time.perf_counter() - t
    out["construct_rss_mb"] = rss_mb()
    out["adapter_metadata_bytes_per_trace"] = table_bytes(adapter.metadata) / max(len(adapter), 1)
    out["dropped"] = len(adapter.dropped)
    t = time.perf_counter()
    checksum = 0.0
    for start in range(0, len(adapter), batch_size):
        spec = adapter.spectrograms(np.arange(start, min(start + batch_size, len(adapter))))
        checksum += float(spec[:, 0, 0, 0].sum())
    out["stream_s"] = time.perf_counter() - t
    out["peak_rss_mb"] = peak_rss_mb()
    out["checksum"] = checksum
    if loader_workers > 0:
        loader = torch.utils.data.DataLoader(
            adapter, batch_size=batch_size, num_workers=loader_workers, shuffle=False
        )
        t = time.perf_counter()
        n = sum(len(labels) for _, labels in loader)
        out["loader_s"] = time.perf_counter() - t
        out["loader_items"] = n
        # largest resident set among the finished worker processes (ru_maxrss is in kB)
        out["loader_worker_peak_rss_mb"] = (
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        )
        out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))


def run_scale(args: argparse.Namespace, workdir: Path) -> None:
    config = SCALE_CONFIG
    sizes = sorted(args.sizes or SCALE_SIZES)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); sets under {workdir}; window "
        f"{config.window_samples} samples at {config.sampling_rate_hz:g} Hz, spectrogram "
        f"{config.spectrogram_shape}, batch {args.batch_size}, buckets of {args.bucket_size}"
    )
    full = workdir / "scale-full"
    try:
        t = time.perf_counter()
        write_set(
            full,
            max(sizes),
            config,
            args.bucket_size,
            trace_seconds=SCALE_TRACE_SECONDS,
            p_sample_range=SCALE_P_SAMPLES,
        )
        disk_mb = sum(f.stat().st_size for f in full.iterdir()) / 2**20
        print(
            f"wrote {max(sizes)} traces ({SCALE_TRACE_SECONDS:g} s each) in "
            f"{time.perf_counter() - t:.0f} s: {disk_mb:.0f} MB on disk"
        )
        header = (
            f"{'traces':>9} {'open s':>7} {'check s':>8} {'stream s':>9} {'items/s':>8} "
            f"{'meta B/tr':>9} {'adapter B/tr':>12} {'RSS base':>8} {'open':>6} {'checked':>7} "
            f"{'peak MB':>8}"
        )
        if args.loader_workers:
            header += f" {'loader s':>8} {'worker peak MB':>14}"
        print(header)
        rows = []
        for size in sizes:
            path = full if size == max(sizes) else subset_set(full, workdir / f"scale-{size}", size)
            command = [
                sys.executable,
                __file__,
                "--scale-child",
                str(path),
                "--batch-size",
                str(args.batch_size),
                "--threads",
                str(args.threads),
                "--loader-workers",
                str(args.loader_workers),
            ]
            result = subprocess.run(command, check=True, capture_output=True, text=True)
            r = json.loads(result.stdout.strip().splitlines()[-1])
            rows.append(r)
            line = (
                f"{r['traces']:>9} {r['open_s']:>7.1f} {r['construct_s']:>8.1f} "
                f"{r['stream_s']:>9.1f} {r['traces'] / r['stream_s']:>8.0f} "
                f"{r['metadata_bytes_per_trace']:>9.0f} {r['adapter_metadata_bytes_per_trace']:>12.0f} "
                f"{r['baseline_rss_mb']:>8.0f} {r['open_rss_mb']:>6.0f} {r['construct_rss_mb']:>7.0f} "
                f"{r['peak_rss_mb']:>8.0f}"
            )
            if args.loader_workers:
                line += f" {r['loader_s']:>8.1f} {r['loader_worker_peak_rss_mb']:>14.0f}"
            print(line, flush=True)
        first, last = rows[0], rows[-1]
        per_trace = (
            (last["peak_rss_mb"] - first["peak_rss_mb"])
            * 2**20
            / max(last["traces"] - first["traces"], 1)
        )
        window_bytes = 3 * config.window_samples * 4
        print(
            f"peak RSS grows {last['peak_rss_mb'] - first['peak_rss_mb']:.0f} MB from "
            f"{first['traces']} to {last['traces']} traces = {per_trace:.0f} B/trace (the "
            f"metadata: {last['metadata_bytes_per_trace']:.0f} B/trace in the dataset's table); "
            f"holding the windows would cost {window_bytes} B/trace"
        )
    finally:
        for path in [full, *(workdir / f"scale-{s}" for s in sizes)]:
            shutil.rmtree(path, ignore_errors=True)


TRAIN_CACHE_SIZES = [20_000, 100_000]
TRAIN_CACHE_MODES = ("memory", "disk")


class _MemorySampler:
    """Peak VmRSS / RssAnon / RssFile of this process, read from /proc every ``interval`` s."""

    def __init__(self, interval: float = 0.01):
        import threading

        self.peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], int(line.split()[1]))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

    def mb(self, key: str) -> float:
        return self.peak[key] / 1024.0


def train_cache_child(path: Path, mode: str, run_dir: Path, batch_size: int) -> None:
    """Run in a fresh process: training's load_data with run.window_cache ``mode``, then one
    fold's validation and test probabilities; print JSON with the memory figures."""
    import resource

    from quake.training import load_config
    from quake.training.loop import build_model, probabilities_at
    from quake.training.run import load_data, open_training_set
    from quake.training.splits import grouped_folds

    def maxrss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    config = load_config(
        overrides={
            "data.path": str(path),
            "run.out": str(run_dir),
            "run.window_cache": mode,
            "run.quiet": True,
            "model.depth": 1,
            "model.pretrained": "none",
        }
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    out: dict = {"mode": mode, "start_maxrss_mb": maxrss_mb()}
    with _MemorySampler() as sampler:
        t = time.perf_counter()
        data, _, _ = load_data(config, open_training_set(config), progress=False, run_dir=run_dir)
        out["load_s"] = time.perf_counter() - t
        out["traces"] = len(data.labels)
        out["window_mb"] = data.waveforms.numel() * 4 / 2**20
        out["load_maxrss_mb"] = maxrss_mb()
        out["load_anon_peak_mb"] = sampler.mb("RssAnon")
        fold = grouped_folds(
            data.labels,
            data.source_ids,
            config.cv.folds,
            val_fraction=config.cv.val_fraction,
            seed=config.seed,
        )[0]
        torch.manual_seed(0)  # the same weights in both modes: the same probabilities
        model = build_model(
            config.model,
            pretrained=False,
            class_names=data.class_names,
            img_size=tuple(data.preprocess.spectrogram_shape[1:]),
        )
        t = time.perf_counter()
        checksum = 0.0
        for indices in (fold.val, fold.test):
            probs = probabilities_at(
                model,
                data.waveforms,
                indices,
                data.preprocess,
                batch_size=batch_size,
                device=torch.device("cpu"),
            )
            checksum += float(probs[:, 0].sum())
        out["score_s"] = time.perf_counter() - t
        out["scored"] = int(len(fold.val) + len(fold.test))
        out["checksum"] = checksum
    out["maxrss_mb"] = maxrss_mb()
    out["anon_peak_mb"] = sampler.mb("RssAnon")
    out["file_peak_mb"] = sampler.mb("RssFile")
    print(json.dumps(out))


def run_train_cache(args: argparse.Namespace, workdir: Path) -> None:
    from quake.training import TrainConfig

    config = TrainConfig().data.preprocess_config()
    sizes = sorted(args.sizes or TRAIN_CACHE_SIZES)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); sets under {workdir}; window "
        f"{config.window_samples} samples ({3 * config.window_samples * 4 / 1000:.1f} kB), "
        f"eval batch {args.batch_size}"
    )
    full = workdir / "train-full"
    try:
        t = time.perf_counter()
        write_set(full, max(sizes), config, args.bucket_size)
        disk_mb = sum(f.stat().st_size for f in full.iterdir()) / 2**20
        print(f"wrote {max(sizes)} traces in {time.perf_counter() - t:.0f} s: {disk_mb:.0f} MB")
        print(
            f"{'traces':>8} {'mode':>6} {'windows MB':>10} {'load s':>7} {'score s':>7} "
            f"{'scored':>7} {'RSS start':>9} {'maxrss load':>11} {'maxrss end':>10} {'anon peak':>9} "
            f"{'file peak':>9}"
        )
        results: dict = {}
        for size in sizes:
            path = full if size == max(sizes) else subset_set(full, workdir / f"train-{size}", size)
            for mode in TRAIN_CACHE_MODES:
                run_dir = workdir / f"run-{size}-{mode}"
                command = [
                    sys.executable,
                    __file__,
                    "--train-cache-child",
                    str(path),
                    "--train-cache-mode",
                    mode,
                    "--train-cache-run",
                    str(run_dir),
                    "--batch-size",
                    str(args.batch_size),
                    "--threads",
                    str(args.threads),
                ]
                try:
                    done = subprocess.run(command, check=True, capture_output=True, text=True)
                finally:
                    shutil.rmtree(run_dir, ignore_errors=True)
                r = json.loads(done.stdout.strip().splitlines()[-1])
                results[size, mode] = r
                print(
                    f"{r['traces']:>8} {mode:>6} {r['window_mb']:>10.0f} {r['load_s']:>7.1f} "
                    f"{r['score_s']:>7.1f} {r['scored']:>7} {r['start_maxrss_mb']:>9.0f} "
                    f"{r['load_maxrss_mb']:>11.0f} "
                    f"{r['maxrss_mb']:>10.0f} {r['anon_peak_mb']:>9.0f} {r['file_peak_mb']:>9.0f}",
                    flush=True,
                )
            memory, disk = results[size, "memory"], results[size, "disk"]
            if memory["checksum"] != disk["checksum"]:
                print(f"  probabilities differ: {memory['checksum']} vs {disk['checksum']}")
            print(
                f"  {size} traces, disk / memory: ru_maxrss {disk['maxrss_mb']:.0f} / "
                f"{memory['maxrss_mb']:.0f} MB = {disk['maxrss_mb'] / memory['maxrss_mb']:.2f}; "
                f"anonymous peak {disk['anon_peak_mb']:.0f} / {memory['anon_peak_mb']:.0f} MB = "
                f"{disk['anon_peak_mb'] / memory['anon_peak_mb']:.2f}",
                flush=True,
            )
    finally:
        for path in [full, *(workdir / f"train-{s}" for s in sizes)]:
            shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sets, one repeat")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where to write sets (default: a temp folder)"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 gives steady figures on a shared machine)",
    )
    parser.add_argument("--bucket-size", type=int, default=1000)
    parser.add_argument(
        "--scale", action="store_true", help="peak memory at 10k / 100k / 1M traces"
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help="--scale / --train-cache: set sizes (traces)",
    )
    parser.add_argument(
        "--loader-workers",
        type=int,
        default=0,
        help="--scale: also stream through a DataLoader with this many worker processes",
    )
    parser.add_argument(
        "--train-cache",
        action="store_true",
        help="peak memory of training's load_data + one fold's scoring, window cache memory vs disk",
    )
    parser.add_argument("--stream-child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train-cache-child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train-cache-mode", default="memory", help=argparse.SUPPRESS)
    parser.add_argument("--train-cache-run", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--scale-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.stream_child is not None:
        stream_child(args.stream_child, args.batch_size)
        return
    if args.scale_child is not None:
        scale_child(args.scale_child, args.batch_size, args.loader_workers)
        return
    if args.train_cache_child is not None:
        train_cache_child(
            args.train_cache_child, args.train_cache_mode, args.train_cache_run, args.batch_size
        )
        return
    if args.train_cache:
        if args.bucket_size == 1000:  # the default of the other modes: larger buckets here
            args.bucket_size = 4096
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="quake-train-cache-"))
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            run_train_cache(args, workdir)
        finally:
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
        return
    if args.scale:
        if args.bucket_size == 1000:  # the default of the other modes: larger buckets here
            args.bucket_size = 4096
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="quake-scale-"))
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            run_scale(args, workdir)
        finally:
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
        return

    sizes = [500, 2000, 5000] if args.quick else [1000, 5000, 20000, 50000]
    throughput_traces = 500 if args.quick else 3000
    repeats = 1 if args.quick else 3
    config = PreprocessConfig()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="quake-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print(f"torch {torch.__version__}, {args.threads} thread(s); sets under {workdir}")
        print(
            f"window {config.window_samples} samples, spectrogram {config.spectrogram_shape}, batch {args.batch_size}"
        )

        t = time.perf_counter()
        full = write_set(workdir / "full", max(sizes), config, args.bucket_size)
        print(
            f"wrote {max(sizes)} traces ({TRACE_SECONDS:g} s each, buckets of {args.bucket_size}) in {time.perf_counter() - t:.1f} s"
        )

        small = subset_set(full, workdir / f"n{throughput_traces}", throughput_traces)
        r = throughput(small, config, args.batch_size, repeats)
        print(f"\n## Throughput ({r['traces']} traces from disk, best of {repeats})")
        print(
            f"adapter construction (validation pass): {r['construct_s']:.2f} s; quality checks off: "
            f"{r['construct_no_quality_s']:.2f} s (each trace is inspected once, here; a trace found "
            "clean is not inspected again when read)"
        )
        print(f"adapter[i] per item          : {r['adapter_per_item_per_s']:10.0f} spectrograms/s")
        print(f"adapter.spectrograms batched : {r['adapter_batched_per_s']:10.0f} spectrograms/s")
        print(f"  of which HDF5 read + trim  : {r['read_and_trim_per_s']:10.0f} windows/s")
        print(
            f"  same, quality checks off   : {r['adapter_batched_no_quality_per_s']:10.0f} spectrograms/s "
            f"-> the checks cost {1 - r['adapter_batched_per_s'] / r['adapter_batched_no_quality_per_s']:.1%}"
        )
        print(
            f"bare torch.stft + .abs()     : {r['bare_stft_per_s']:10.0f} spectrograms/s (windows in memory)"
        )
        print(f"bare torch.stft, complex only: {r['bare_stft_complex_per_s']:10.0f} spectrograms/s")
        print(
            f"ratio adapter batched / bare : {r['adapter_batched_per_s'] / r['bare_stft_per_s']:.3f}"
        )
        print(
            f"ratio adapter per item / bare: {r['adapter_per_item_per_s'] / r['bare_stft_per_s']:.3f}"
        )

        print("\n## Peak memory while streaming (fresh process per set)")
        print(
            f"{'traces':>8} {'seconds':>8} {'traces/s':>9} {'baseline MB':>12} {'peak RSS MB':>12} {'growth MB':>10}"
        )
        rows = []
        for size in sizes:
            path = full if size == max(sizes) else subset_set(full, workdir / f"n{size}", size)
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--stream-child",
                    str(path),
                    "--batch-size",
                    str(args.batch_size),
                    "--threads",
                    str(args.threads),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"{row['traces']:>8} {row['seconds']:>8.1f} {row['traces'] / row['seconds']:>9.0f} "
                f"{row['baseline_rss_mb']:>12.0f} {row['peak_rss_mb']:>12.0f} "
                f"{row['peak_rss_mb'] - row['baseline_rss_mb']:>10.0f}"
            )
        first, last = rows[0], rows[-1]
        grow = last["peak_rss_mb"] - first["peak_rss_mb"]
        per_trace_kb = 1024 * grow / max(last["traces"] - first["traces"], 1)
        raw_kb = 3 * config.window_samples * 4 / 1024
        print(
            f"peak RSS grows {grow:.0f} MB from {first['traces']} to {last['traces']} traces "
            f"({per_trace_kb:.2f} kB/trace; holding the windows would cost {raw_kb:.0f} kB/trace)"
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
