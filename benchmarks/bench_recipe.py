#!/usr/bin/env python
"""Which training recipe is the default: every lever alone and together, on real sets, several
seeds, the same grouped folds for all of them, the baseline beside them.

    python benchmarks/bench_recipe.py                      # every variant, both sets, seeds 0 1 2
    python benchmarks/bench_recipe.py --variants before ema --sets eqnoise-3c --seeds 0
    python benchmarks/bench_recipe.py --table-only         # the table from the runs done so far

Each (variant, set, seed) is one ``scripts/train.py --backbone tiny --depth 4 --data SET --seed
S`` run with the variant's ``--set`` overrides, in ``runs/recipe/<variant>/<set>/seed<S>/``
(rerunning resumes or reuses it). A finished run's fold metrics go to
``benchmarks/recipe_runs.json`` (kept in the repository, so the table never needs the run
folders), and the table of mean +- std over all folds of all seeds and the worst fold, trace and
event level, to ``benchmarks/recipe.md``. Folds depend only on the data and the seed, so every
variant of a seed is scored on the same folds as the baseline (computed in the ``before`` runs).
Nothing here looks at a test fold to choose anything: each run chooses its checkpoints on its
own validation split; the table is only read by people choosing the defaults.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as scripts/train.py, before torch

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "recipe_runs.json"
TABLE = REPO / "benchmarks" / "recipe.md"

# The augmentation of the recipe before this work (since then ``null``: by what the windows
# start at); every variant starts from it, so each command reproduces its run
BEFORE_AUGMENT = {
    "augment.time_shift_s": 1.0,
    "augment.channel_dropout_prob": 0.1,
    "augment.time_mask_prob": 0.5,
    "augment.freq_mask_prob": 0.5,
}
#: augmentation by what the windows start at (the defaults' null): written nowhere in a command
BY_ANCHOR = dict.fromkeys(BEFORE_AUGMENT)
# name -> (what it changes, the --set overrides on top of the default config)
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "before": ("the default config before the recipe work", {}),
    "min_epochs": ("no checkpoint before epoch 10", {"optim.min_epochs": 10}),
    "smoothing": ("epochs judged by a 3-epoch trailing mean", {"optim.selection_smoothing": 3}),
    "ema": ("EMA of the weights (decay 0.99 per step)", {"optim.ema_decay": 0.99}),
    "bandpass": (
        "linear detrend, 5 % taper, 1-20 Hz Butterworth (order 4)",
        {
            "data.preprocess.detrend": "linear",
            "data.preprocess.taper_fraction": 0.05,
            "data.preprocess.bandpass_hz": [1.0, 20.0],
        },
    ),
    "smoothing_b": ("as smoothing, with the baseline trained", {"optim.selection_smoothing": 3}),
    "long_window": (
        "40.96 s windows, hop 128 samples (the same 33 x 32 spectrogram grid)",
        {"data.preprocess.window_s": 40.96, "data.preprocess.stft_hop": 128},
    ),
    "context": (
        "as before, with catalog context (local hour, weekday, depth, magnitude) in the "
        "event-level decision",
        {"context.enabled": True},
    ),
    "light_augment": (
        "time shift 0.25 s, component dropout 0.3, no spectrogram masks",
        {
            "augment.time_shift_s": 0.25,
            "augment.channel_dropout_prob": 0.3,
            "augment.time_mask_prob": 0.0,
            "augment.freq_mask_prob": 0.0,
        },
    ),
    "fusion": (
        "fusion head: band powers, envelopes and H/V of the spectrogram beside the CLS token",
        {"model.fusion": True},
    ),
    "short_schedule": ("40 epochs, patience 10", {"optim.epochs": 40, "optim.patience": 10}),
    "fusion_light": (
        "augmentation by anchoring (light at P picks), fusion head",
        {**BY_ANCHOR, "model.fusion": True},
    ),
    "fusion_short": (
        "augmentation by anchoring (light at P picks), fusion head, 40 epochs, patience 10",
        {**BY_ANCHOR, "model.fusion": True, "optim.epochs": 40, "optim.patience": 10},
    ),
    "patience10": (
        "augmentation by anchoring (light at P picks), patience 10",
        {**BY_ANCHOR, "optim.patience": 10},
    ),
    "batch32": (
        "augmentation by anchoring (light at P picks), batch 32",
        {**BY_ANCHOR, "optim.batch_size": 32},
    ),
}
# variants that also train the baseline, so the table shows them combined with it too
WITH_BASELINE = (
    "before",
    "smoothing_b",
    "light_augment",
    "long_window",
    "context",
    "fusion",
    "fusion_short",
    "fusion_light",
    "patience10",
    "batch32",
)
SETS = ("eqnoise-3c", "pnw-eqex")
METRICS = ("macro_f1", "balanced_accuracy", "roc_auc")
#: The HybridViT's share of the vote in the table's combined rows (deploy.hybrid_weight)
EQUAL_VOTES = 0.5


def real_data_dir() -> Path:
    return Path(os.environ.get("QUAKE_REAL_DATA", REPO.parent / "shared" / "data" / "real"))


def run_dir(variant: str, data_set: str, seed: int) -> Path:
    return REPO / "runs" / "recipe" / variant / data_set / f"seed{seed}"


def variant_settings(variant: str) -> dict[str, object]:
    return {**BEFORE_AUGMENT, **VARIANTS[variant][1]}


def overrides(variant: str, data_set: str, seed: int) -> dict[str, object]:
    return {
        **variant_settings(variant),
        "data.path": str(real_data_dir() / data_set),
        "model.backbone": "tiny",
        "model.depth": 4,
        "seed": seed,
        "baseline.enabled": variant in WITH_BASELINE,
        # deploying does not change what is measured; fixed so that runs made before the
        # default became "combined" still resume
        "deploy.strategy": "ensemble",
        "run.out": str(run_dir(variant, data_set, seed)),
        "run.quiet": True,
    }


def command(variant: str, data_set: str, seed: int) -> str:
    sets = " ".join(
        f"--set {k}={json.dumps(v, separators=(',', ':')) if isinstance(v, list) else v}"
        for k, v in variant_settings(variant).items()
        if v is not None  # null: the default, nothing to set
    )
    extra = "" if variant in WITH_BASELINE else " --no-baseline"
    return (
        f"python scripts/train.py --backbone tiny --depth 4 --data ../shared/data/real/{data_set} "
        f"--seed {seed}{extra} {sets}"
    ).strip()


def summarise(metrics: dict, run: Path | None = None) -> dict:
    """What the table needs from a run's metrics.json: per-fold figures, trace and event level.
    The combination is always scored at equal votes, as every row of the table was (from the
    run's predictions; ``benchmarks/bench_combine.py`` measures other weights)."""
    from quake.training.results import combined_from_predictions

    # the HybridViT alone: its own block since runs deploy a model chosen on validation (at
    # its thresholds, chosen there too); the top level before that
    hybrid = metrics.get("hybridvit") or metrics
    out = {
        "trace": [{m: f.get(m) for m in METRICS} for f in hybrid["folds"]],
        "event": [{m: f.get(m) for m in METRICS} for f in hybrid["event_level"]["folds"]],
        "best_epochs": [f.get("best_epoch") for f in metrics["folds"]],
        "seconds": metrics.get("timings", {}).get("total_s"),
    }
    base = metrics.get("baseline")
    if base:
        out["baseline_trace"] = [{m: f.get(m) for m in METRICS} for f in base["folds"]]
        out["baseline_event"] = [
            {m: f.get(m) for m in METRICS} for f in base["event_level"]["folds"]
        ]
        if metrics.get("context"):
            out["context_event"] = [
                {m: f.get(m) for m in METRICS} for f in metrics["context"]["event_level"]["folds"]
            ]
        combined = metrics.get("combined")
        # runs made before training scored the combination, or at another weight
        if not combined or combined.get("hybrid_weight", EQUAL_VOTES) != EQUAL_VOTES:
            combined = combined_from_predictions(run, EQUAL_VOTES)
        out["combined_trace"] = [{m: f.get(m) for m in METRICS} for f in combined["folds"]]
        out["combined_event"] = [
            {m: f.get(m) for m in METRICS} for f in combined["event_level"]["folds"]
        ]
    return out


def load_results(path: Path = RESULTS) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_results(results: dict, path: Path = RESULTS) -> None:
    from quake.runtime import write_text_atomic

    path.parent.mkdir(exist_ok=True)
    write_text_atomic(path, json.dumps(results, indent=1, sort_keys=True) + "\n")


def run_one(variant: str, data_set: str, seed: int) -> dict:
    return train_and_summarise(overrides(variant, data_set, seed))


def train_and_summarise(settings: dict[str, object]) -> dict:
    """One training run with the code's defaults and ``settings`` (configs/default.yaml lists
    the same values, a test keeps them in step: a long benchmark never reads a YAML edited
    after it started) -> :func:`summarise` of it, with its wall time."""
    from quake.training import load_config, train

    config = load_config(None, settings)
    start = time.perf_counter()
    result = train(config)
    summary = summarise(result.metrics, result.run_dir)
    summary["wall_s"] = time.perf_counter() - start
    return summary


def _cell(values: list[float | None]) -> str:
    found = np.array([v for v in values if v is not None], dtype=float)
    if not len(found):
        return "-"
    return f"{found.mean():.3f} ± {found.std():.3f} ({found.min():.3f})"


def table(results: dict, seeds: list[int]) -> str:
    lines = [
        "Mean ± std over all folds of all seeds, worst fold in brackets; 5 grouped folds per "
        "seed. Written by `python benchmarks/bench_recipe.py`.",
        "",
    ]
    for data_set in SETS:
        header = ["variant", "seeds"] + [
            f"{level} {m}" for level in ("trace", "event") for m in METRICS
        ]
        lines += [f"### {data_set}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        rows: list[tuple[str, list[dict]]] = []
        before = [results.get(f"before/{data_set}/{s}") for s in seeds]
        before = [r for r in before if r]
        if before:
            rows.append(
                (
                    "baseline (random forest)",
                    [{"trace": r["baseline_trace"], "event": r["baseline_event"]} for r in before],
                )
            )
        for variant in VARIANTS:
            found = [results.get(f"{variant}/{data_set}/{s}") for s in seeds]
            found = [r for r in found if r]
            rows.append((variant, found))
            # the same runs deployed as deploy.strategy combined, and with catalog context
            rows.append(
                (
                    f"{variant} + baseline, combined",
                    [
                        {"trace": r["combined_trace"], "event": r["combined_event"]}
                        for r in found
                        if "combined_trace" in r
                    ],
                )
            )
            rows.append(
                (
                    f"{variant}, combined + catalog context",
                    [
                        {"trace": [], "event": r["context_event"]}
                        for r in found
                        if "context_event" in r
                    ],
                )
            )
        for name, runs in rows:
            if not runs:
                continue
            cells = [name, str(len(runs))]
            for level in ("trace", "event"):
                for m in METRICS:
                    cells.append(_cell([f[m] for r in runs for f in r[level]]))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "Variants and commands (seed S; the baseline and the combination of the HybridViT with "
        "it, `deploy.strategy: combined` at equal votes, come from the `before` runs):",
        "",
    ]
    for variant, (what, _) in VARIANTS.items():
        lines.append(
            f"- `{variant}`: {what}: `{command(variant, '<set>', 0).replace('--seed 0', '--seed S')}`"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--table-only", action="store_true", help="no training, just the table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    results = load_results()
    for key, summary in results.items():  # runs made before training scored the combination
        variant, data_set, seed = key.split("/")
        run = run_dir(variant, data_set, int(seed))
        if "baseline_trace" in summary and "combined_trace" not in summary and run.is_dir():
            summary.update(summarise(json.loads((run / "metrics.json").read_text()), run))
            save_results(results)
    if not args.table_only:
        # seed-major: a partial benchmark still compares every variant on the same seeds
        for seed in args.seeds:
            for data_set in args.sets:
                for variant in args.variants:
                    key = f"{variant}/{data_set}/{seed}"
                    if key in results:
                        continue
                    print(f"{key}: {command(variant, data_set, seed)}", flush=True)
                    results[key] = run_one(variant, data_set, seed)
                    save_results(results)
                    print(f"{key}: done in {results[key]['wall_s']:.0f} s", flush=True)
    text = table(results, sorted({int(k.rsplit("/", 1)[1]) for k in results}))
    from quake.runtime import write_text_atomic

    write_text_atomic(TABLE, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
