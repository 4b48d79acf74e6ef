"""Benchmark the memory of `quake classify` over big catalogs, waveforms absent.

    python benchmarks/bench_catalog_memory.py                       # CSV 10k, 100k; QuakeML 10k
    python benchmarks/bench_catalog_memory.py --csv 10000 100000 1000000 --quakeml 10000

Writes synthetic catalogs (CSV, and QuakeML for the sizes given to ``--quakeml``) and runs the
classification job (`quake classify ... --stations-out ...`, default options) over each in a
child process of its own, against an empty waveform folder: every event then gets the named skip
"no waveform folder", so no model time is spent and what is measured is the catalog, the tables
and the outputs. The child reports its peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``) and that
of its reader worker (``RUSAGE_CHILDREN``); the figure per row is the job's peak minus the
baseline (a child that only imports quake and loads the same tiny random-init model), divided by
the rows. A second run with ``--quakeml OUT`` shows what annotating the obspy Catalog costs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MiB = 1024 * 1024
CSV_HEADER = (
    "event_id,origin_time,latitude,longitude,depth_km,magnitude,magnitude_type,event_type,"
    "evaluation_mode,evaluation_status\n"
)
TYPES = ("earthquake", "explosion", "", "")  # half the events typed, as in a real catalog


def write_csv_catalog(path: Path, n: int, seed: int = 0) -> None:
    """``n`` events a second apart from 2020-01-01, in blocks so that writing a million is quick."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2020-01-01T00:00:00", "ms")
    with path.open("w") as f:
        f.write(CSV_HEADER)
        for lo in range(0, n, 100_000):
            k = min(n, lo + 100_000) - lo
            times = start + (np.arange(lo, lo + k) * 1000 + rng.integers(0, 1000, k)).astype(
                "timedelta64[ms]"
            )
            lat, lon = rng.uniform(40, 49, k), rng.uniform(-125, -116, k)
            depth, mag = rng.uniform(0, 30, k), rng.uniform(0.5, 4.5, k)
            f.writelines(
                f"ev{lo + i:07d},{np.datetime_as_string(times[i])}Z,{lat[i]:.4f},{lon[i]:.4f},"
                f"{depth[i]:.2f},{mag[i]:.2f},ml,{TYPES[(lo + i) % 4]},automatic,preliminary\n"
                for i in range(k)
            )


QUAKEML_HEAD = """<?xml version='1.0' encoding='utf-8'?>
<q:quakeml xmlns:q="http://quakeml.org/xmlns/quakeml/1.2" xmlns="http://quakeml.org/xmlns/bed/1.2">
  <eventParameters publicID="smi:local/catalog">
"""
QUAKEML_EVENT = """    <event publicID="smi:local/event/{eid}">
      <preferredOriginID>smi:local/origin/{eid}</preferredOriginID>
      <preferredMagnitudeID>smi:local/magnitude/{eid}</preferredMagnitudeID>
      <type>earthquake</type>
      <origin publicID="smi:local/origin/{eid}">
        <time><value>{time}</value></time>
        <latitude><value>{lat:.4f}</value></latitude>
        <longitude><value>{lon:.4f}</value></longitude>
        <depth><value>{depth:.0f}</value></depth>
        <evaluationMode>automatic</evaluationMode>
      </origin>
      <magnitude publicID="smi:local/magnitude/{eid}">
        <mag><value>{mag:.2f}</value></mag>
        <type>ml</type>
      </magnitude>
    </event>
"""


def write_quakeml_catalog(path: Path, n: int, seed: int = 0) -> None:
    """The same kind of events as QuakeML (an origin and a magnitude each, no picks)."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2020-01-01T00:00:00", "ms")
    with path.open("w") as f:
        f.write(QUAKEML_HEAD)
        for i in range(n):
            t = np.datetime_as_string(
                start + np.timedelta64(i * 1000 + int(rng.integers(1000)), "ms")
            )
            f.write(QUAKEML_EVENT.format(eid=f"ev{i:07d}", time=t + "Z", lat=rng.uniform(40, 49),
                                         lon=rng.uniform(-125, -116), depth=rng.uniform(0, 3e4),
                                         mag=rng.uniform(0.5, 4.5)))  # fmt: skip
        f.write("  </eventParameters>\n</q:quakeml>\n")


def write_model(folder: Path) -> Path:
    """A random-init TINY depth-1 classifier folder (plumbing, not accuracy)."""
    import torch

    from quake.data import PreprocessConfig
    from quake.deploy.ensemble import EventClassifier
    from quake.models import HybridViT

    torch.manual_seed(0)
    config = PreprocessConfig()
    model = HybridViT(depth=1, img_size=config.spectrogram_shape[1:],
                      class_names=["earthquake", "explosion"])  # fmt: skip
    return EventClassifier([model], config).save(folder / "model")


# --- the child: one measurement per process ----------------------------------------------------
def child(argv: list[str]) -> None:
    """``--child baseline MODEL`` or ``--child job <quake classify arguments>``: do it, then print
    the peak RSS of this process and of its reader worker, in bytes, as JSON."""
    kind, rest = argv[0], argv[1:]
    t = time.perf_counter()
    if kind == "baseline":
        import quake

        quake.load(rest[0])
    else:
        from quake.cli import main

        if main(["classify", *rest]) != 0:
            raise SystemExit("the job failed")
    seconds = time.perf_counter() - t
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB
    worker_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print("MEASURE " + json.dumps({"rss": self_rss, "worker_rss": worker_rss, "seconds": seconds}))


def measure(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                          text=True, check=False)  # fmt: skip
    lines = [x for x in done.stdout.splitlines() if x.startswith("MEASURE ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"measurement {args[:1]} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("MEASURE ") :])


def run_job(root: Path, model: Path, catalog: Path, quakeml: bool) -> dict:
    waveforms = root / "waveforms"
    waveforms.mkdir(exist_ok=True)
    out = root / "out"
    out.mkdir(exist_ok=True)
    args = ["--model", str(model), "--catalog", str(catalog), "--waveforms", str(waveforms),
            "--source", "folders", "--out", str(out / "predictions.csv"),
            "--stations-out", str(out / "stations.csv"), "--no-progress"]  # fmt: skip
    if quakeml:
        args += ["--quakeml", str(out / "classified.xml")]
    figures = measure(["job", *args])
    rows = sum(1 for _ in (out / "predictions.csv").open()) - 1
    figures["rows"] = rows
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=int, nargs="*", default=[10_000, 100_000],
                        help="CSV catalog sizes (rows)")  # fmt: skip
    parser.add_argument("--quakeml", type=int, nargs="*", default=[10_000],
                        help="QuakeML catalog sizes (events)")  # fmt: skip
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    lines = []
    with tempfile.TemporaryDirectory(prefix="bench-catalog-memory-") as tmp:
        root = Path(tmp)
        model = write_model(root)
        base = measure(["baseline", str(model)])
        lines.append(f"baseline (import quake, load the model): {base['rss'] / MiB:.0f} MiB")
        print(lines[-1], flush=True)
        runs = [("csv", n, False) for n in args.csv]
        runs += [(fmt, n, q) for n in args.quakeml for fmt, q in (("quakeml", False),
                                                                  ("quakeml", True))]  # fmt: skip
        header = (
            "| catalog | rows | --quakeml | job peak RSS | bytes/row over baseline | "
            "reader worker peak | time |"
        )
        lines += ["", header, "|---|---|---|---|---|---|---|"]
        print("\n".join(lines[-3:]), flush=True)
        for fmt, n, quakeml in runs:
            catalog = root / f"catalog-{n}.{'csv' if fmt == 'csv' else 'xml'}"
            if not catalog.exists():
                (write_csv_catalog if fmt == "csv" else write_quakeml_catalog)(catalog, n)
            r = run_job(root, model, catalog, quakeml)
            if r["rows"] != n:
                raise SystemExit(f"{catalog}: {r['rows']} prediction rows, expected {n}")
            per_row = (r["rss"] - base["rss"]) / n
            lines.append(
                f"| {fmt} | {n:,} | {'yes' if quakeml else 'no'} | {r['rss'] / MiB:,.0f} MiB | "
                f"{per_row:,.0f} | {r['worker_rss'] / MiB:,.0f} MiB | {r['seconds']:.0f} s |"
            )
            print(lines[-1], flush=True)
    if args.markdown:
        Path(args.markdown).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        sys.exit(main())
