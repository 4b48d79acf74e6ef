"""What a training run reports: metrics per fold and aggregated (mean ± std, worst fold), the
deployed model's probabilities, the out-of-fold predictions, figures, metrics.json and the
report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from quake.deploy.combined import HYBRID_WEIGHT, combine_parts
from quake.runtime import (
    Ranks,
    resolve_precision,
    write_text_atomic,
)
from quake.training import metrics as M
from quake.training import report, report_figures
from quake.training.config import TrainConfig
from quake.training.cross_validation import (
    CVData,
    FoldOutcome,
    predictions_frame,
    probs_from_frame,
)
from quake.training.data import augment_summary
from quake.training.loop import PretrainedResolver
from quake.training.splits import (
    Fold,
)


def fold_metrics(
    y: np.ndarray, probs: np.ndarray, groups: np.ndarray, class_names
) -> tuple[dict, dict, int, int]:
    trace = M.classification_metrics(y, probs, class_names)
    event_probs, event_true, _, n_mixed = M.combine_by_event(probs, y, groups)
    event = M.classification_metrics(event_true, event_probs, class_names)
    return trace, event, n_mixed, len(event_true)


def per_class_aggregate(per_fold: list[dict], class_names) -> dict:
    out = {}
    for c in class_names:
        out[c] = {
            key: {
                "mean": float(np.mean([f["per_class"][c][key] for f in per_fold])),
                "std": float(np.std([f["per_class"][c][key] for f in per_fold])),
            }
            for key in ("precision", "recall", "f1")
        }
        out[c]["support"] = int(sum(f["per_class"][c]["support"] for f in per_fold))
    return out


def compute_metrics(
    data: CVData,
    folds: list[Fold],
    outcomes: list[FoldOutcome],
    baseline: dict | None,
    hybrid_weight: float = HYBRID_WEIGHT,
) -> dict:
    names = data.class_names.to_list()
    fold_entries, event_entries, n_mixed_total, n_events_total = [], [], 0, 0
    for fold, outcome in zip(folds, outcomes, strict=True):
        y = data.labels[fold.test]
        trace, event, n_mixed, n_events = fold_metrics(
            y, outcome.probs, data.source_ids[fold.test], names
        )
        n_mixed_total += n_mixed
        n_events_total += n_events
        fold_entries.append(
            {
                "fold": fold.index,
                "seed": outcome.seed,
                "n_train": int(len(fold.train)),
                "n_val": int(len(fold.val)),
                "n_test": int(len(fold.test)),
                "best_epoch": outcome.best_epoch,
                "epochs_run": len(outcome.history),
                "train_seconds": outcome.seconds,
                **trace,
            }
        )
        event_entries.append({"fold": fold.index, "n_events": n_events, **event})
    result = {
        "classes": names,
        "folds": fold_entries,
        "aggregate": M.aggregate(fold_entries),
        "per_class_aggregate": per_class_aggregate(fold_entries, names),
        "confusion_matrix_total": np.sum(
            [f["confusion_matrix"] for f in fold_entries], axis=0
        ).tolist(),
        "event_level": {
            "rule": "mean of station log-probabilities per source_id, softmax-normalised",
            "n_events": n_events_total,
            "n_mixed_label_groups": n_mixed_total,
            "folds": event_entries,
            "aggregate": M.aggregate(event_entries),
        },
    }
    if baseline is not None:
        tests = [(f.index, data.labels[f.test], data.source_ids[f.test]) for f in folds]
        result["baseline"] = {
            "model": baseline["model"],
            "n_features": len(baseline["feature_names"]),
            "features": baseline["feature_names"],
            "fit_on": "each fold's training + validation traces; tested on the same test folds",
            **fold_level_metrics(tests, baseline["probs"], names),
        }
        combined = deployed_probs("combined", outcomes, baseline, hybrid_weight)
        result["combined"] = {
            "rule": "per window, normalised geometric mean of the HybridViT's and the "
            f"baseline's probabilities, the HybridViT's share of the vote {hybrid_weight:g} "
            "(deploy.hybrid_weight; quake.deploy.combined)",
            "hybrid_weight": hybrid_weight,
            **fold_level_metrics(tests, combined, names),
        }
    else:
        result["baseline"] = None
        result["combined"] = None
    return result


def deployed_probs(
    strategy: str,
    outcomes: list[FoldOutcome],
    baseline: dict | None,
    hybrid_weight: float = HYBRID_WEIGHT,
) -> list[np.ndarray]:
    """Per fold, the test probabilities of the model ``strategy`` deploys (``hybrid_weight``:
    the HybridViT's share of the vote in ``combined``)."""
    if strategy == "baseline":
        return list(baseline["probs"])
    if strategy == "combined":
        return [
            combine_parts(o.probs, b, hybrid_weight)
            for o, b in zip(outcomes, baseline["probs"], strict=True)
        ]
    return [o.probs for o in outcomes]


def combined_from_predictions(run_dir: Path, hybrid_weight: float) -> dict:
    """The ``combined`` block of a finished run's metrics.json at another ``hybrid_weight``,
    from the test predictions it wrote for the HybridViT and the baseline (nothing retrained):
    how the deployed combination would have scored on the same folds."""
    run_dir = Path(run_dir)
    ours = pd.read_csv(run_dir / "predictions.csv").sort_values("index")
    theirs = pd.read_csv(run_dir / "baseline_predictions.csv").sort_values("index")
    if not np.array_equal(ours["index"].to_numpy(), theirs["index"].to_numpy()):
        raise ValueError(
            f"{str(run_dir)!r}: the HybridViT and baseline predictions cover different items; "
            "expected the two prediction tables of one finished run"
        )
    names = json.loads((run_dir / "metrics.json").read_text())["classes"]
    tests, probs = [], []
    for fold, part in ours.groupby("fold", sort=True):
        rows = (ours["fold"] == fold).to_numpy()
        tests.append(
            (int(fold), part["y_true"].to_numpy(), part["source_id"].astype(str).to_numpy())
        )
        hybrid = probs_from_frame(part, names)
        probs.append(combine_parts(hybrid, probs_from_frame(theirs[rows], names), hybrid_weight))
    return fold_level_metrics(tests, probs, names)


def fold_level_metrics(
    tests: list[tuple[int, np.ndarray, np.ndarray]], probs: list[np.ndarray], class_names
) -> dict:
    """Per-fold trace and event metrics of one model's test probabilities and their mean ± std.

    ``tests``: per fold ``(fold index, labels, source ids)`` of its test items, ``probs`` the
    model's ``(n_test, C)`` probabilities of them. Used for the baseline and the combination
    (and by ``benchmarks/bench_recipe.py`` on the predictions a run wrote)."""
    trace_folds, event_folds = [], []
    for (index, y, groups), p in zip(tests, probs, strict=True):
        trace, event, _, n_events = fold_metrics(y, p, groups, class_names)
        trace_folds.append({"fold": index, "n_test": int(len(y)), **trace})
        event_folds.append({"fold": index, "n_events": n_events, **event})
    return {
        "folds": trace_folds,
        "aggregate": M.aggregate(trace_folds),
        "event_level": {"folds": event_folds, "aggregate": M.aggregate(event_folds)},
    }


def write_predictions(data, folds, outcomes, run_dir: Path) -> pd.DataFrame:
    """The deep folds' out-of-fold predictions, written to ``predictions.csv``."""
    all_frames = [
        predictions_frame(data, f.test, o.probs, f.index)
        for f, o in zip(folds, outcomes, strict=True)
    ]
    predictions = pd.concat(all_frames)
    write_text_atomic(run_dir / "predictions.csv", predictions.to_csv(index=False))
    return predictions


def pretrained_summary(config: TrainConfig, outcomes, resolver: PretrainedResolver) -> dict:
    """What ``metrics.json`` says of the pretrained weights: asked for, used, per fold."""
    return {
        "requested": config.model.pretrained,
        **outcomes[0].pretrained_info,
        "note": resolver.status.get("note", "from the saved folds"),
        "per_fold_source": [o.pretrained_info.get("source") for o in outcomes],
    }


def training_summary(
    config: TrainConfig, data, device: torch.device, threads: int, workers: int, dist: Ranks
) -> dict:
    """What ``metrics.json`` says of how the folds were trained (device, processes, precision)."""
    return {
        "device": str(device),
        "threads": threads,
        "parallel_folds": workers,
        "processes": dist.world_size,
        "backend": "nccl" if device.type == "cuda" else "gloo" if dist.enabled else None,
        "precision": resolve_precision(config.optim.precision, device),
        "compile": config.run.compile,
        "window_cache": "memory" if data.windows_path is None else "disk",
    }


def write_figures(
    run_dir: Path, config: TrainConfig, dataset, data, folds, outcomes, results: dict, baseline,
    predictions: pd.DataFrame, baseline_predictions: pd.DataFrame | None,
) -> dict:  # fmt: skip
    """Write the plots and the explanation figures; what ``metrics.json`` says of the latter."""
    plot_input = {
        "class_names": data.class_names.to_list(),
        "y_true": np.concatenate([data.labels[f.test] for f in folds]),
        "probs": np.concatenate([o.probs for o in outcomes]),
        "baseline_probs": None if baseline is None else np.concatenate(baseline["probs"]),
        "confusion_matrix": np.asarray(results["confusion_matrix_total"]),
        "histories": [o.history for o in outcomes],
        "best_epochs": [o.best_epoch for o in outcomes],
    }
    report.write_plots(run_dir, plot_input)
    return report_figures.write_explanations(
        run_dir,
        predictions,
        data.waveforms,
        data.labels,
        data.class_names.to_list(),
        data.preprocess,
        report_figures.item_metadata(dataset.metadata, data.trace_names),
        seed=config.seed,
        baseline_predictions=baseline_predictions,
    )


def write_metrics_and_report(
    run_dir: Path, config: TrainConfig, data, data_summary: dict, metrics: dict
) -> None:
    """Write ``metrics.json`` and the readable ``report.md`` made from it."""
    write_text_atomic(run_dir / "metrics.json", json.dumps(json_safe(metrics), indent=2) + "\n")
    extra = {
        "run_name": run_dir.name,
        "data_path": data_summary["path"],
        "backbone": config.model.backbone,
        "depth": config.model.depth,
        "fusion": config.model.fusion,
        "input_shape": tuple(data_summary["input_shape"]),
        "deploy_note": metrics["deploy"]["why"],
        "preprocess_summary": json.dumps(data.preprocess.to_dict()),
        "augment_summary": augment_summary(config),
    }
    write_text_atomic(run_dir / "report.md", report.render_report(json_safe(metrics), extra))


def macro_f1_summary(metrics: dict) -> str:
    """``deployed (combined) 0.967 ± 0.009, HybridViT 0.956, baseline 0.956``: the model in
    ``model/`` first, so that the last line of a run names what was deployed."""

    def figure(block: dict) -> str:
        agg = block["aggregate"]["macro_f1"]
        return f"{agg['mean']:.3f} ± {agg['std']:.3f}"

    parts = {
        "HybridViT": metrics,
        **{k: metrics[k] for k in ("baseline", "combined") if metrics.get(k)},
    }
    strategy = metrics["deploy"]["strategy"]
    deployed = strategy if strategy in parts else "HybridViT"  # ensemble: the HybridViTs
    first = f"deployed ({strategy}) {figure(parts[deployed])}"
    rest = [f"{name} {figure(block)}" for name, block in parts.items() if name != deployed]
    return ", ".join([first, *rest])


def json_safe(value):
    """NaN -> None, numpy scalars -> Python, recursively (metrics.json stays strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
