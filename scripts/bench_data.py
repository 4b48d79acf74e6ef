#!/usr/bin/env python
"""Benchmark the data side: spectrograms/s through the adapter, and memory while streaming.

1. Throughput. A SeisBench-format set is written to disk; spectrograms are computed from it
   through the adapter (HDF5 read + trimming + z-score + STFT), per item (``adapter[i]``, what a
   DataLoader does) and per batch (``adapter.spectrograms``), and beside them a bare
   ``torch.stft`` (magnitude) on the same windows already in memory, in the same run. The ratio
   adapter / bare is the figure that matters; absolute numbers depend on the machine.
2. Memory. Sets of growing size (up to 50,000 traces, bucketed) are streamed through the adapter
   (construction pass + all spectrograms), each in a fresh process; its peak RSS (VmHWM) must
   stay flat as the set grows.

    python scripts/bench_data.py            # full run (writes ~1.3 GB under a temp folder)
    python scripts/bench_data.py --quick    # a short run
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

TRACE_SECONDS = 24.0  # a bit longer than the 20.48 s window, so trimming really cuts


def write_set(
    path: Path, n_traces: int, config: PreprocessConfig, bucket_size: int, seed: int = 0
) -> Path:
    """A SeisBench-format set of random three-component traces, written bucket by bucket."""
    rng = np.random.default_rng(seed)
    n = int(TRACE_SECONDS * config.sampling_rate_hz)
    pool = rng.normal(size=(64, 3, n)).astype(np.float32)  # reused to keep generation cheap
    classes = ("earthquake", "explosion", "noise")
    with SeisBenchWriter(
        path, config.sampling_rate_hz, bucket_size=bucket_size, overwrite=True
    ) as writer:
        for i in range(n_traces):
            waveform = pool[i % len(pool)] * np.float32(1.0 + (i % 7))
            writer.add(
                f"t{i}",
                waveform,
                source_id=f"ev{i // 3}",
                source_type=classes[i % 3],
                trace_p_arrival_sample=300 + (i % 200),
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
    bare_s = best_of(lambda: bare_stft(True))
    bare_complex_s = best_of(lambda: bare_stft(False))
    read_s = best_of(read_only)
    return {
        "traces": n,
        "construct_s": construct_s,
        "adapter_per_item_per_s": n / per_item_s,
        "adapter_batched_per_s": n / batched_s,
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
    parser.add_argument("--stream-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.stream_child is not None:
        stream_child(args.stream_child, args.batch_size)
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
        print(f"adapter construction (validation pass): {r['construct_s']:.2f} s")
        print(f"adapter[i] per item          : {r['adapter_per_item_per_s']:10.0f} spectrograms/s")
        print(f"adapter.spectrograms batched : {r['adapter_batched_per_s']:10.0f} spectrograms/s")
        print(f"  of which HDF5 read + trim  : {r['read_and_trim_per_s']:10.0f} windows/s")
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
