"""Benchmark HybridViT throughput on this CPU: windows/s, MACs, achieved GFLOP/s vs peak.

python scripts/bench_model.py            # every backbone at depth 4 and 12, batch 128
python scripts/bench_model.py --quick    # TINY depth 4 and 12 only, fewer repeats
python scripts/bench_model.py --bf16 --compile --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import torch

from quake.models import Backbone
from quake.models.benchmark import (
    matmul_peak_gflops,
    measure_inference,
    measure_training,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--img-size", type=int, nargs=2, default=(33, 64), metavar=("H", "W"))
    parser.add_argument(
        "--backbones", nargs="+", default=[b.value for b in Backbone], metavar="NAME"
    )
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 12])
    parser.add_argument("--repeats", type=int, default=10, help="timed batches per model")
    parser.add_argument("--train-repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="TINY only, 5 repeats")
    parser.add_argument("--bf16", action="store_true", help="also bf16 autocast (AMX) for TINY")
    parser.add_argument("--compile", action="store_true", help="also torch.compile for TINY d4")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", default=None, help="write all figures to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.backbones, args.repeats, args.train_repeats = ["tiny"], 5, 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    img_size = tuple(args.img_size)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; batch {args.batch}, img_size {img_size}",
        flush=True,
    )
    peak_fp32 = matmul_peak_gflops(dtype=torch.float32)
    peak_bf16 = matmul_peak_gflops(dtype=torch.bfloat16) if args.bf16 else None
    print(f"peak (2048^3 matmul, best of 10): fp32 {peak_fp32:.0f} GFLOP/s", end="")
    print(f", bf16 {peak_bf16:.0f} GFLOP/s" if peak_bf16 else "", flush=True)

    results = []
    header = (
        f"| {'backbone':10s} | depth | mode      | precision     |  params | GMAC/win |"
        f" win/s (median) | win/s (best) | GFLOP/s (best) | % of peak |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")

    def report(r, peak):
        results.append({**r.as_dict(), "peak_gflops": peak})
        print(
            f"| {r.backbone:10s} | {r.depth:5d} | {r.mode:9s} | {r.precision:13s} |"
            f" {r.params / 1e6:6.2f}M | {r.gmacs_per_window:8.4f} | {r.windows_per_s:14.1f} |"
            f" {r.windows_per_s_best:12.1f} | {r.gflops_best:14.1f} |"
            f" {100 * r.gflops_best / peak:8.1f}% |",
            flush=True,
        )

    for name in args.backbones:
        for depth in args.depths:
            r = measure_inference(name, depth, args.batch, img_size, args.repeats)
            report(r, peak_fp32)
    tiny = Backbone.TINY.value
    if args.bf16:
        for depth in args.depths:
            r = measure_inference(tiny, depth, args.batch, img_size, args.repeats, "bf16-autocast")
            report(r, peak_bf16)
    if args.compile:
        r = measure_inference(tiny, 4, args.batch, img_size, args.repeats, compile_model=True)
        report(r, peak_fp32)
    r = measure_training(tiny, 4, args.batch, img_size, args.train_repeats)
    report(r, peak_fp32)
    if args.bf16:
        r = measure_training(tiny, 4, args.batch, img_size, args.train_repeats, "bf16-autocast")
        report(r, peak_bf16)

    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"peak_fp32_gflops": peak_fp32, "peak_bf16_gflops": peak_bf16, "results": results},
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
