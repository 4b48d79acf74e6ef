#!/usr/bin/env python
"""The HybridViT's share of the vote in the deployed combination (``deploy.hybrid_weight``),
measured on finished runs: nothing is retrained, each run's test predictions of the HybridViT
and the baseline are combined again at every weight, on the very same folds.

    python scripts/train.py --backbone tiny --depth 4 --data DATA --seed S --out runs/combine/SET-sS
    python benchmarks/bench_combine.py eqnoise-3c=runs/combine/eqnoise-3c-s* pnw-eqex=runs/combine/pnw-eqex-s*

``NAME=RUN`` starts a set called NAME with its first run folder; the folders after it, up to the
next ``NAME=``, join it (so a shell glob works); a folder before any ``NAME=`` is a set of its
own. Prints, per set and weight, the mean +- std over all folds of the set's runs and the worst
fold: trace macro F1, event macro F1, event balanced accuracy, event ROC AUC. Weight 0 is the
baseline alone, 1 the HybridViT alone. ``--markdown PATH`` also writes the tables (with this
command), ``--json PATH`` every fold's figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

WEIGHTS = (0.0, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0)
COLUMNS = (  # (figure, level, metric)
    ("trace macro F1", "trace", "macro_f1"),
    ("event macro F1", "event", "macro_f1"),
    ("event bal. acc.", "event", "balanced_accuracy"),
    ("event ROC AUC", "event", "roc_auc"),
)


def parse_sets(words: list[str]) -> dict[str, list[Path]]:
    """``NAME=RUN`` words (or bare run folders) -> {name: [run folders]}, in order."""
    sets: dict[str, list[Path]] = {}
    name = None
    for word in words:
        if "=" in word:
            name, word = word.split("=", 1)
        run = Path(word)
        needed = ("hybridvit_predictions.csv", "baseline_predictions.csv", "metrics.json")
        if not all((run / name).is_file() for name in needed):
            raise ValueError(
                f"{word!r} is not a finished training run; expected a run folder with "
                "hybridvit_predictions.csv, baseline_predictions.csv and metrics.json"
            )
        sets.setdefault(name or run.name, []).append(run)
    return sets


def fold_figures(runs: list[Path], weight: float) -> dict[str, list[float]]:
    """Every fold of every run at ``weight``: {column name: [figure per fold]}."""
    from quake.training.results import combined_from_predictions

    out: dict[str, list[float]] = {name: [] for name, _, _ in COLUMNS}
    for run in runs:
        block = combined_from_predictions(run, weight)
        folds = {"trace": block["folds"], "event": block["event_level"]["folds"]}
        for name, level, metric in COLUMNS:
            out[name] += [f[metric] for f in folds[level] if f.get(metric) is not None]
    return out


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f} ({np.min(values):.3f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="NAME=RUN or RUN, finished run folders")
    parser.add_argument("--weights", nargs="+", type=float, default=list(WEIGHTS))
    parser.add_argument("--markdown", default=None, help="write the tables here")
    parser.add_argument("--json", default=None, help="write every fold's figures here")
    args = parser.parse_args(argv)
    try:
        bad = [w for w in args.weights if not 0.0 <= w <= 1.0]
        if bad:
            raise ValueError(f"--weights {bad} out of range; expected numbers from 0 to 1")
        sets = parse_sets(args.runs)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from quake.runtime import write_text_atomic

    figures: dict[str, dict] = {}
    lines = [
        "# The HybridViT's share of the vote in the combined model (deploy.hybrid_weight)",
        "",
        "`python benchmarks/bench_combine.py " + " ".join(argv or sys.argv[1:]) + "`",
        "",
        "Each run: `python scripts/train.py --backbone tiny --depth 4 [--data SET] --seed S "
        "--out RUN`; its test predictions of the HybridViT and the baseline combined again at "
        "each weight on the same folds (nothing retrained). 0: the baseline alone, 1: the "
        "HybridViT alone.",
    ]
    for name, runs in sets.items():
        lines += ["", f"{name}: {len(runs)} run(s), mean ± std over all folds (worst fold)", ""]
        lines.append("| HybridViT weight | " + " | ".join(c for c, _, _ in COLUMNS) + " |")
        lines.append("|---" * (len(COLUMNS) + 1) + "|")
        figures[name] = {"runs": [str(r) for r in runs]}
        for weight in args.weights:
            folds = fold_figures(runs, weight)
            figures[name][str(weight)] = folds
            cells = [cell(folds[c]) for c, _, _ in COLUMNS]
            lines.append(f"| {weight:g} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.markdown:
        write_text_atomic(Path(args.markdown), "\n".join(lines) + "\n")
    if args.json:
        write_text_atomic(Path(args.json), json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
