#!/usr/bin/env python
"""Which windows labelled noise hold an arrival? Checks a set's labels before training on them.

    python scripts/check_noise_windows.py ../shared/data/real/eqnoise-3c [--ratio 6]

Cuts every window of the class (``--class``, default ``noise``) exactly as training does
(default preprocessing, or ``--config``), runs a classic STA/LTA (0.5 s / 5 s, 2-15 Hz) over
each live component and prints the windows whose largest ratio reaches ``--ratio``, highest
first, with the share of the class. A noise window cut from "before the event" often holds
another event; a classifier that calls it an earthquake is right about the waveform and wrong
about the label, so look at these before reading them as model errors.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="a set quake reads (SeisBench folder, catalog + miniSEED)")
    parser.add_argument("--class", dest="label", default="noise", help="class to check")
    parser.add_argument("--ratio", type=float, default=6.0, help="STA/LTA ratio to report")
    parser.add_argument("--config", help="training config whose preprocessing cuts the windows")
    args = parser.parse_args(argv)
    if not args.ratio > 1.0:
        parser.error(f"--ratio must be above 1 (an STA/LTA ratio), got {args.ratio}")

    from quake.data import WaveformDataAdapter
    from quake.data.onsets import peak_sta_lta
    from quake.training import load_config
    from quake.training.run import open_training_set

    config = load_config(args.config, overrides={"data.path": args.data})
    preprocess = config.data.preprocess_config()
    adapter = WaveformDataAdapter(open_training_set(config), config=preprocess)
    names = list(adapter.class_names)
    if args.label not in names:
        parser.error(f"--class {args.label!r} is not a class of {args.data}; its classes: {names}")
    rows = np.flatnonzero(adapter.labels == names.index(args.label))
    ratios = peak_sta_lta(adapter.get_waveforms(rows), preprocess.sampling_rate_hz)
    hits = np.argsort(-ratios)[: int(np.sum(ratios >= args.ratio))]
    print(
        f"{len(hits)} of {len(rows)} windows labelled {args.label} reach an STA/LTA ratio of "
        f"{args.ratio:g} (0.5 s / 5 s, 2-15 Hz): they hold an arrival"
    )
    ids = adapter.metadata["trace_name"] if "trace_name" in adapter.metadata else None
    for k in hits:
        name = ids.iloc[rows[k]] if ids is not None else str(rows[k])
        print(f"  {ratios[k]:6.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
