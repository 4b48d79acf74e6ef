"""Benchmark continuous annotation: seconds per 3-component 100 Hz station-day.

    python benchmarks/bench_annotate.py [--model runs/my-run] [--hours 24] [--threads 2]

The day is made by splicing the 29 s real noise windows of ``eqnoise-3c`` (three components,
100 Hz; ``$QUAKE_REAL_DATA`` or ``../shared/data/real``) end to end into ``--hours`` of data,
written as three miniSEED day files (STEIM2 of the rounded counts, as an archive stores them).
One run measures, on the same machine and threads:

- reading: ``obspy.read`` of the three day files;
- annotation: ``annotate_station`` at the default stride (spectrograms cut from the day's STFT
  where the model's preprocessing allows it, i.e. without filters; the row says which path),
  in float32 and under bf16 autocast (``--precision bf16``; ``auto``, the default, takes it where
  the CPU has bf16 instructions), and the per-window path for comparison;
- model only: ``predict_proba_with`` on spectrograms already made, the same number of windows.

Without ``--model`` the model is a random-init HybridViT of the default size (depth 4) and
preprocessing (20.48 s at 100 Hz); the figures do not depend on the weights. Prints one
Markdown table; the figures per day are the measured ones scaled by ``24 / hours``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def spliced_day(real: Path, hours: float):
    """``--hours`` of the eqnoise-3c noise windows end to end: an obspy Stream (HHZ/HHN/HHE)."""
    import h5py
    import obspy
    import pandas as pd

    folder = real / "eqnoise-3c"
    metadata = pd.read_csv(folder / "metadata.csv")
    noise = metadata[(metadata["source_type"] == "noise") & (metadata["trace_components"] == "ZNE")]
    with h5py.File(folder / "waveforms.hdf5", "r") as f:
        pieces = [f["data"][name][()] for name in noise["trace_name"]]
    n = int(hours * 3600 * 100)
    reps = int(np.ceil(n / sum(p.shape[1] for p in pieces)))
    data = np.concatenate(pieces * reps, axis=1)[:, :n]
    data = np.round(data / np.abs(data).max() * 2**20).astype(np.int32)  # counts, as stored
    t0 = obspy.UTCDateTime("2021-03-01")
    return obspy.Stream([
        obspy.Trace(data[k], {"network": "XX", "station": "SPLC", "channel": f"HH{c}",
                              "sampling_rate": 100.0, "starttime": t0})
        for k, c in enumerate("ZNE")
    ])  # fmt: skip


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a quake model or run folder (default: random init)")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import obspy
    import torch

    from quake.annotate import annotate_station, default_stride_s
    from quake.annotate.spectrogram import shared_stft_applies
    from quake.data import PreprocessConfig
    from quake.data.components import stream_to_array_info
    from quake.data.transforms import spectrogram_batch
    from quake.deploy import EventClassifier, load
    from quake.models import HybridViT
    from quake.runtime import cpu_has_native_bf16

    torch.set_num_threads(args.threads)
    if args.model:
        clf = load(args.model)
    else:
        torch.manual_seed(0)
        config = PreprocessConfig()
        model = HybridViT(img_size=config.spectrogram_shape[1:], num_classes=3,
                          class_names=["earthquake", "explosion", "noise"])  # fmt: skip
        clf = EventClassifier([model], config)
    real = Path(os.environ.get("QUAKE_REAL_DATA", Path(__file__).parents[2] / "shared/data/real"))
    day = spliced_day(real, args.hours)
    scale = 24.0 / args.hours
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for tr in day:
            path = Path(tmp) / f"{tr.id}.mseed"
            tr.write(str(path), format="MSEED", encoding="STEIM2")
            paths.append(path)
        read_s, stream = timed(lambda: sum((obspy.read(str(p)) for p in paths), obspy.Stream()))
    rows.append(("read the day from miniSEED (3 files)", read_s * scale, ""))
    warm_up = stream.slice(stream[0].stats.starttime, stream[0].stats.starttime + 600)
    for precision in ("fp32", "bf16"):  # first calls (kernel choice, allocations) untimed
        annotate_station(clf, warm_up, precision=precision)
    reference = None
    stride = int(round(default_stride_s(clf.config) * clf.config.sampling_rate_hz))
    path = (
        "shared STFT" if shared_stft_applies(clf.config, stride) else "per-window: filtered model"
    )
    for label, options in (
        (f"annotate, float32 ({path})", {"precision": "fp32"}),
        (f"annotate, bf16 autocast ({path})", {"precision": "bf16"}),
        ("annotate, per-window spectrograms, float32", {"shared_stft": False, "precision": "fp32"}),
    ):
        seconds, result = timed(lambda o=options: annotate_station(clf, stream, **o))
        rows.append((label, seconds * scale, f"{result.n_windows} windows"))
        if reference is None:
            reference = result.probabilities
        else:
            diff = np.nanmax(np.abs(result.probabilities - reference))
            rows[-1] = (label, seconds * scale, f"max probability difference {diff:.2g}")
    reading = stream_to_array_info(stream, clf.config)
    n = result.n_windows
    starts = np.arange(n) * stride
    idx = starts[:, None] + np.arange(clf.config.window_samples)[None]
    specs = torch.cat([
        spectrogram_batch(
            torch.from_numpy(reading.data[:, idx[k : k + 512]].transpose(1, 0, 2).copy()),
            clf.config,
        )
        for k in range(0, n, 512)
    ])  # fmt: skip
    windows = np.zeros((n, 3, clf.config.window_samples), dtype=np.float32)
    model_s, _ = timed(lambda: clf.predict_proba_with(windows, specs, batch_size=128))
    rows.append(("model only (spectrograms given), float32", model_s * scale,
                 f"{n / model_s:.0f} windows/s"))  # fmt: skip
    print(f"{args.hours:g} h spliced from eqnoise-3c noise, scaled to a day; {args.threads} "
          f"threads; bf16 native: {cpu_has_native_bf16()}; stride {default_stride_s(clf.config):g} s; "
          f"model {clf!r}\n")  # fmt: skip
    print("| step | seconds per station-day | note |\n|---|---|---|")
    for label, seconds, note in rows:
        print(f"| {label} | {seconds:.1f} | {note} |")


if __name__ == "__main__":
    main()
