#!/usr/bin/env python
"""The deployed model against each part alone, across sets: is the model a run chooses on its
own data (quake.training.choice) at least the forest alone, at its saved thresholds?

    python benchmarks/bench_deploy.py                                   # every set, seeds 0 1 2
    python benchmarks/bench_deploy.py --sets eqnoise-3c --seeds 0
    python benchmarks/bench_deploy.py --sets esec-surface --variant covering-window
    python benchmarks/bench_deploy.py --table-only

Each (set, variant, seed) is one ``scripts/train.py --backbone tiny --depth 4 [--data SET]
--seed S`` run (the default command; ``embedded`` is the set it trains on without ``--data``)
with the variant's ``--set`` overrides, in ``runs/deploy/<set>/<variant>/seed<S>/`` (rerunning
resumes it). Each finished run's event-level figures go to ``benchmarks/deploy_runs.json`` and
the table (mean over all folds of all seeds, the worst fold in brackets) to
``benchmarks/deploy.md``. The deployed model is the one in ``model/``: in each fold, chosen on
the other folds' out-of-fold predictions and thresholded on the fold's validation split; no
fold's choice looks at its own test fold.
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

from quake.data.config import FILTERS_OFF  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "deploy_runs.json"
TABLE = REPO / "benchmarks" / "deploy.md"
SETS = ("pnw-eqex", "eqnoise-3c", "eqnoise-3c-checked", "esec-surface", "embedded")
#: The filters off: the default before the 1 Hz band-pass.
NO_FILTERS: dict[str, object] = {f"data.preprocess.{k}": v for k, v in FILTERS_OFF.items()}
COVERING_WINDOW: dict[str, object] = {
    "data.preprocess.window_s": 128.0,
    "data.preprocess.sampling_rate_hz": 32.0,
    "data.preprocess.stft_nperseg": 64,
    "data.preprocess.stft_hop": 64,
}
#: name -> (what it changes, the --set overrides on top of the default command)
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "default": ("the default config", {}),
    "no-filters": (
        "the filters off (no detrend, taper or band-pass): the default before the 1 Hz band-pass",
        NO_FILTERS,
    ),
    "covering-window": (
        "the window the report proposes when the signals outlast it (quake.data.onsets."
        "covering_window; on esec-surface: 128 s at 32 Hz from 2 s before the catalogue time, "
        "4096 samples, 33 x 64 spectrogram bins, band-pass 1-14.4 Hz; the forest reads it in "
        "six stretches)",
        COVERING_WINDOW,
    ),
    "covering-window-no-filters": (
        "the covering window, the filters off",
        {**COVERING_WINDOW, **NO_FILTERS},
    ),
    "two-windows": (
        "two consecutive windows per recording (data.preprocess.windows_per_recording), pooled "
        "per station in classification; the filters off (measured before the 1 Hz band-pass)",
        {"data.preprocess.windows_per_recording": 2, **NO_FILTERS},
    ),
    "six-windows": (
        "six consecutive windows per recording, what the survey proposes on esec-surface (the "
        "default window back to back as far as 90 % of the signals end); the filters off "
        "(measured before the 1 Hz band-pass)",
        {"data.preprocess.windows_per_recording": 6, **NO_FILTERS},
    ),
}
#: What runs made before the choice moved to out-of-fold predictions chose their weight on.
VALIDATION_SPLIT = "validation split"
MODELS = (("deployed", None), ("HybridViT alone", "hybridvit"), ("forest alone", "baseline"))
FIGURES = (("event", "roc_auc"), ("event", "balanced_accuracy"), ("trace", "macro_f1"))


def real_data_dir() -> Path:
    return Path(os.environ.get("QUAKE_REAL_DATA", REPO.parent / "shared" / "data" / "real"))


def overrides(data_set: str, variant: str, seed: int) -> dict[str, object]:
    settings: dict[str, object] = {
        "seed": seed,
        "run.out": str(REPO / "runs" / "deploy" / data_set / variant / f"seed{seed}"),
        "run.quiet": True,
        **VARIANTS[variant][1],
    }
    if data_set != "embedded":
        settings["data.path"] = str(real_data_dir() / data_set)
    return settings


def command(data_set: str, variant: str, seed: int) -> str:
    data = "" if data_set == "embedded" else f" --data ../shared/data/real/{data_set}"
    sets = "".join(f" --set {k}={_yaml_value(v)}" for k, v in VARIANTS[variant][1].items())
    return f"python scripts/train.py --backbone tiny --depth 4{data} --seed {seed}{sets}"


def _yaml_value(value: object) -> str:
    """A --set value as the command line reads it (YAML): null, [a,b], numbers, words."""
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_yaml_value(v) for v in value) + "]"
    return str(value)


def summarise(metrics: dict) -> dict:
    """Per model, the per-fold figures of :data:`FIGURES`; the deployed model's choices."""
    decision = metrics["deployed_decision"]
    out: dict = {"deployed_model": decision["model"],
                 "deployed_weight": decision["hybrid_weight"],
                 "chosen_on": decision.get("chosen_on", VALIDATION_SPLIT),
                 "fold_models": [f["decision"]["model"] for f in metrics["folds"]]}  # fmt: skip
    for label, key in MODELS:
        block = metrics if key is None else metrics.get(key)
        if not block:
            continue
        out[label] = {
            f"{level}_{name}": [
                f.get(name) for f in (block if level == "trace" else block["event_level"])["folds"]
            ]
            for level, name in FIGURES
        }
    return out


def run_one(data_set: str, variant: str, seed: int) -> dict:
    from quake.training import load_config, train

    start = time.perf_counter()
    result = train(load_config(overrides=overrides(data_set, variant, seed)))
    return {**summarise(result.metrics), "seconds": time.perf_counter() - start}


def _cell(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{np.mean(values):.3f} ({np.min(values):.3f})"


def table(results: dict) -> str:
    lines = [
        "# The deployed model against each part alone",
        "",
        "Generated by `python benchmarks/bench_deploy.py` from `deploy_runs.json`. Each run is "
        "the default command on the set (`--data SET --seed S`, plus the variant's overrides); "
        "figures are the mean over all test folds of all seeds, the worst fold in brackets; "
        "each model at its own thresholds, chosen on validation. Deployed: in each fold the "
        "model (HybridViT weight 0, 0.2, ..., 1) chosen on what the `chosen on` column says "
        "(`out-of-fold`: the other folds' test predictions, as training does now; "
        "`validation split`: the fold's own, as runs made before did), its thresholds on the "
        "fold's validation split; `model/` column: what the run deploys (per seed).",
        "",
        "| set | variant | seeds | model | event ROC AUC | event balanced acc. | "
        "trace macro F1 | chosen on | `model/` |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(results):
        data_set, variant = key.split("/")
        runs = results[key]
        seeds = sorted(runs, key=int)
        for label, _ in MODELS:
            if not all(label in runs[s] for s in seeds):
                continue
            cells = [
                _cell([v for s in seeds for v in runs[s][label][f"{lvl}_{n}"]])
                for lvl, n in FIGURES
            ]
            chosen_on = (
                ", ".join(sorted({runs[s].get("chosen_on", VALIDATION_SPLIT) for s in seeds}))
                if label == "deployed"
                else ""
            )
            deployed = (
                ", ".join(
                    runs[s]["deployed_model"]
                    + (
                        f" {runs[s]['deployed_weight']:g}"
                        if runs[s]["deployed_model"] == "combined"
                        else ""
                    )
                    for s in seeds
                )  # fmt: skip
                if label == "deployed"
                else ""
            )
            lines.append(
                f"| {data_set} | {variant} | {','.join(seeds)} | {label} | "
                + " | ".join(cells)
                + f" | {chosen_on} | {deployed} |"
            )
    lines += ["", "Commands:", ""]
    for key in sorted(results):
        data_set, variant = key.split("/")
        for s in sorted(results[key], key=int):
            lines.append(f"- `{command(data_set, variant, int(s))}` "
                         f"({results[key][s]['seconds'] / 60:.1f} min)")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--variant", default="default", choices=sorted(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if not args.table_only:
        for data_set in args.sets:
            for seed in args.seeds:
                key = f"{data_set}/{args.variant}"
                print(f"{command(data_set, args.variant, seed)}", flush=True)
                results.setdefault(key, {})[str(seed)] = run_one(data_set, args.variant, seed)
                RESULTS.write_text(json.dumps(results, indent=1) + "\n")
                TABLE.write_text(table(results))
    TABLE.write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
