"""Benchmark HybridViT throughput on this CPU: windows/s, MACs, achieved GFLOP/s vs peak.

    python benchmarks/bench_model.py                 # every backbone, depth 4 and 12, batch 128
    python benchmarks/bench_model.py --quick         # TINY only, fewer repeats
    python benchmarks/bench_model.py --bf16 --compile --json bench.json

Each configuration runs at every thread count in --threads (default: 1 and all cores). Peak is a
2048^3 matmul measured in the same run at the same thread count. "% peak" compares best wall
times; "% peak (CPU)" compares FLOPs per CPU-second, which other load on the machine disturbs
far less (on one thread it is the model's efficiency per core).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import torch

from quake.data.config import DEFAULT_SPECTROGRAM_SIZE
from quake.models import Backbone

from model_throughput import matmul_peak, measure_inference, measure_training

COLUMNS = (
    ("backbone", 10),
    ("depth", 5),
    ("mode", 9),
    ("precision", 13),
    ("compiled", 8),
    ("threads", 7),
    ("params", 7),
    ("GMAC/win", 8),
    ("win/s median", 12),
    ("win/s best", 10),
    ("GFLOP/s best", 12),
    ("% peak", 6),
    ("GFLOP/CPU-s", 11),
    ("% peak (CPU)", 12),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument(
        "--img-size",
        type=int,
        nargs=2,
        default=DEFAULT_SPECTROGRAM_SIZE,
        metavar=("H", "W"),
        help="spectrogram size (default: that of the default preprocessing)",
    )
    parser.add_argument(
        "--backbones", nargs="+", default=[b.value for b in Backbone], metavar="NAME"
    )
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 12])
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="default: 1 and all")
    parser.add_argument("--repeats", type=int, default=10, help="timed batches per model")
    parser.add_argument("--train-repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="TINY only, 5 repeats")
    parser.add_argument("--bf16", action="store_true", help="also bf16 autocast (AMX) for TINY")
    parser.add_argument("--compile", action="store_true", help="also torch.compile for TINY d4")
    parser.add_argument("--json", default=None, help="write all figures to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.backbones, args.repeats, args.train_repeats = ["tiny"], 5, 3
    if args.threads is None:
        args.threads = sorted({1, torch.get_num_threads()})
    return args


def _row(values) -> str:
    return (
        "| "
        + " | ".join(f"{v:>{w}}" for v, (_, w) in zip(list(values), COLUMNS, strict=True))
        + " |"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    img_size = tuple(args.img_size)
    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at start; batch {args.batch}, img_size {img_size}",
        flush=True,
    )
    peaks, results = [], []
    tiny = Backbone.TINY.value
    for threads in args.threads:
        torch.set_num_threads(threads)
        peak32 = matmul_peak(dtype=torch.float32)
        peak16 = matmul_peak(dtype=torch.bfloat16) if args.bf16 else None
        peaks += [p.__dict__ for p in (peak32, peak16) if p is not None]
        print(
            f"\n{threads} thread(s): matmul peak fp32 {peak32.gflops:.0f} GFLOP/s wall, "
            f"{peak32.gflops_per_cpu_s:.0f} per CPU-s",
            end="",
        )
        if peak16:
            print(
                f"; bf16 {peak16.gflops:.0f} wall, {peak16.gflops_per_cpu_s:.0f} per CPU-s", end=""
            )
        print(flush=True)
        print(_row(name for name, _ in COLUMNS))
        print("|" + "|".join("-" * (w + 2) for _, w in COLUMNS) + "|", flush=True)

        def report(r, peak):
            results.append({**r.as_dict(), "peak": peak.__dict__})
            print(
                _row(
                    (
                        r.backbone,
                        r.depth,
                        r.mode,
                        r.precision,
                        "yes" if r.compiled else "no",
                        r.threads,
                        f"{r.params / 1e6:.2f}M",
                        f"{r.gmacs_per_window:.4f}",
                        f"{r.windows_per_s:.1f}",
                        f"{r.windows_per_s_best:.1f}",
                        f"{r.gflops_best:.1f}",
                        f"{100 * r.gflops_best / peak.gflops:.0f}%",
                        f"{r.gflops_per_cpu_s:.1f}",
                        f"{100 * r.gflops_per_cpu_s / peak.gflops_per_cpu_s:.0f}%",
                    )
                ),
                flush=True,
            )

        for name in args.backbones:
            for depth in args.depths:
                report(measure_inference(name, depth, args.batch, img_size, args.repeats), peak32)
        if args.bf16:
            for depth in args.depths:
                r = measure_inference(
                    tiny, depth, args.batch, img_size, args.repeats, "bf16-autocast"
                )
                report(r, peak16)
        if args.compile:
            r = measure_inference(tiny, 4, args.batch, img_size, args.repeats, compile_model=True)
            report(r, peak32)
            if args.bf16:
                r = measure_inference(
                    tiny, 4, args.batch, img_size, args.repeats, "bf16-autocast", True
                )
                report(r, peak16)
        report(measure_training(tiny, 4, args.batch, img_size, args.train_repeats), peak32)
        if args.bf16:
            r = measure_training(tiny, 4, args.batch, img_size, args.train_repeats, "bf16-autocast")
            report(r, peak16)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peaks": peaks, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
