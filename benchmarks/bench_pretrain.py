#!/usr/bin/env python
r"""Is pretraining on unlabelled recordings worth it? The label-efficiency curve: the HybridViT
from random initialisation and from a ``quake pretrain`` encoder (on unlabelled-pnw, or on it
pooled with eqnoise-3c's recordings), each trained on 10 %, 25 %, 50 % and 100 % of every fold's
training events, on the same grouped folds (the test folds do not change with the fraction), the
baseline and the default combination beside them.

    python scripts/pretrain.py --data ../shared/data/real/unlabelled-pnw --out runs/pretrain-pnw
    python scripts/pretrain.py --data ../shared/data/real/unlabelled-pnw \
        --data ../shared/data/real/eqnoise-3c --out runs/pretrain-pooled
    python benchmarks/bench_pretrain.py                    # both sets, seed 0
    python benchmarks/bench_pretrain.py --sets eqnoise-3c --fractions 0.25 1.0 --seeds 0 1
    python benchmarks/bench_pretrain.py --table-only

Each (init, fraction, set, seed) is one ``scripts/train.py --backbone tiny --depth 4`` run with
``--set cv.train_fraction=F`` and ``--pretrained none|runs/pretrain-pnw|runs/pretrain-pooled``,
in ``runs/pretrain-bench/<init>@<percent>/<set>/seed<S>/``. Figures go to
``benchmarks/pretrain_runs.json`` and the table to ``benchmarks/pretrain.md``, with the
pretraining run's cost (minutes, windows/s) from its ``pretrain.json``. Nothing here chooses
anything on a test fold.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as scripts/train.py, before torch

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from bench_recipe import (  # noqa: E402
    BEFORE_AUGMENT,
    METRICS,
    REPO,
    SETS,
    _cell,
    load_results,
    real_data_dir,
    save_results,
    train_and_summarise,
)

RESULTS = REPO / "benchmarks" / "pretrain_runs.json"
TABLE = REPO / "benchmarks" / "pretrain.md"
REAL = "../shared/data/real"
#: init -> (pretraining run folder, the command that makes it); "random" has none
PRETRAIN_RUNS = {
    "pretrained": (
        "runs/pretrain-pnw",
        f"python scripts/pretrain.py --data {REAL}/unlabelled-pnw --out runs/pretrain-pnw",
    ),
    # unlabelled-pnw and eqnoise-3c's recordings without their labels: eqnoise-3c's test folds
    # are among the pretraining windows (never their labels), as a user pretraining on all of
    # their own recordings would have it
    "pooled": (
        "runs/pretrain-pooled",
        f"python scripts/pretrain.py --data {REAL}/unlabelled-pnw --data {REAL}/eqnoise-3c "
        "--out runs/pretrain-pooled",
    ),
    # the other objective, at about the same pretraining time (an epoch costs ~3 times more)
    "contrastive": (
        "runs/pretrain-contrastive",
        f"python scripts/pretrain.py --data {REAL}/unlabelled-pnw --objective contrastive "
        "--epochs 8 --out runs/pretrain-contrastive",
    ),
}
FRACTIONS = (0.1, 0.25, 0.5, 1.0)
INITS = ("random", "pretrained", "pooled", "contrastive")


def pretrain_run(init: str) -> Path:
    return REPO / PRETRAIN_RUNS[init][0]


def variant(init: str, fraction: float) -> str:
    return f"{init}@{round(fraction * 100)}"


def settings(init: str, fraction: float, data_set: str, seed: int) -> dict[str, object]:
    return {
        **BEFORE_AUGMENT,  # the recipe these runs were made with, for every set
        "data.path": str(real_data_dir() / data_set),
        "model.backbone": "tiny",
        "model.depth": 4,
        "model.pretrained": "none" if init == "random" else str(pretrain_run(init)),
        "cv.train_fraction": fraction,
        "seed": seed,
        "run.out": str(
            REPO / "runs" / "pretrain-bench" / variant(init, fraction) / data_set / f"seed{seed}"
        ),
        "run.quiet": True,
    }


def command(init: str, fraction: float, data_set: str) -> str:
    pretrained = "none" if init == "random" else PRETRAIN_RUNS[init][0]
    augment = " ".join(f"--set {k}={v}" for k, v in BEFORE_AUGMENT.items())
    return (
        f"python scripts/train.py --backbone tiny --depth 4 --data ../shared/data/real/{data_set} "
        f"--pretrained {pretrained} --set cv.train_fraction={fraction} {augment} --seed S"
    )


def pretraining_cost(init: str) -> str:
    folder, make = PRETRAIN_RUNS[init]
    path = pretrain_run(init) / "pretrain.json"
    if not path.is_file():
        return f"{init}: no pretraining run at {folder} (`{make}`)."
    run = json.loads(path.read_text())
    progress, timings, data = run["progress"], run["timings"], run["data"]
    return (
        f"{init} (`{make}`, {run['objective']['name']}): "
        f"{data['n_windows']} windows ({data['hours']:.1f} h of recordings), "
        f"{progress['epochs_done']} epochs in {timings['training_s'] / 60:.1f} min of training at "
        f"{timings['windows_per_s']:.0f} windows/s on {run['device']} ({run['threads']} threads); "
        f"loss {progress['first_loss']:.3f} -> {progress['final_loss']:.3f}, validation "
        f"{progress['first_val_loss']:.3f} -> {progress['final_val_loss']:.3f}."
    )


def table(results: dict) -> str:
    lines = [
        "Mean ± std over all folds of all seeds, worst fold in brackets; 5 grouped folds per "
        "seed, the same test folds at every fraction. Written by `python "
        "benchmarks/bench_pretrain.py`.",
        "",
        "Pretraining runs:",
        "",
        *(f"- {pretraining_cost(init)}" for init in PRETRAIN_RUNS),
        "",
    ]
    for data_set in SETS:
        header = ["training events", "model", "runs"] + [
            f"{level} {m}" for level in ("trace", "event") for m in METRICS
        ]
        lines += [f"### {data_set}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        for fraction in FRACTIONS:
            rows: list[tuple[str, list[dict]]] = []
            for init in INITS:
                prefix = f"{variant(init, fraction)}/{data_set}/"
                runs = [r for key, r in results.items() if key.startswith(prefix)]
                rows.append((f"HybridViT, {init}", runs))
                if init == "random":
                    rows.append(("baseline", [_as(r, "baseline") for r in runs]))
                rows.append((f"combined, {init}", [_as(r, "combined") for r in runs]))
            for name, runs in rows:
                if not runs:
                    continue
                cells = [f"{round(fraction * 100)} %", name, str(len(runs))]
                for level in ("trace", "event"):
                    for m in METRICS:
                        cells.append(_cell([f[m] for r in runs for f in r[level]]))
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Commands (S the seed):", ""]
    for init in INITS:
        lines.append(f"- {init}: `{command(init, 0.25, '<set>')}` (and 0.1, 0.5, 1.0)")
    return "\n".join(lines) + "\n"


def _as(summary: dict, model: str) -> dict:
    return {"trace": summary[f"{model}_trace"], "event": summary[f"{model}_event"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    parser.add_argument("--inits", nargs="+", default=list(INITS), choices=list(INITS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--table-only", action="store_true", help="no training, just the table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for init in args.inits if not args.table_only else ():
        if init != "random" and not (pretrain_run(init) / "encoder.safetensors").is_file():
            folder, make = PRETRAIN_RUNS[init]
            parser.error(f"no pretrained encoder in {folder}; run `{make}`")

    results = load_results(RESULTS)
    if not args.table_only:
        for seed in args.seeds:
            for data_set in args.sets:
                for fraction in sorted(args.fractions):
                    for init in args.inits:
                        key = f"{variant(init, fraction)}/{data_set}/{seed}"
                        if key in results:
                            continue
                        print(f"{key}: {command(init, fraction, data_set)}", flush=True)
                        results[key] = train_and_summarise(settings(init, fraction, data_set, seed))
                        save_results(results, RESULTS)
                        print(f"{key}: done in {results[key]['wall_s']:.0f} s", flush=True)
    text = table(results)
    from quake.runtime import write_text_atomic

    write_text_atomic(TABLE, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
