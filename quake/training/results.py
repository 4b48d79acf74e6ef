"""What a training run reports: metrics per fold and aggregated (mean ± std, worst fold), the
deployed model's probabilities, the out-of-fold predictions, figures, metrics.json and the
report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from quake.deploy.combined import combine_parts
from quake.probabilities import decide
from quake.runtime import (
    Ranks,
    resolve_precision,
    write_text_atomic,
)
from quake.training import metrics as M
from quake.training import report, report_figures
from quake.training.choice import Choices
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
    y: np.ndarray, probs: np.ndarray, groups: np.ndarray, class_names, thresholds=None
) -> tuple[dict, dict, int, int]:
    trace = M.classification_metrics(y, probs, class_names, thresholds)
    event_probs, event_true, _, n_mixed = M.combine_by_event(probs, y, groups)
    event = M.classification_metrics(event_true, event_probs, class_names, thresholds)
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
    choices: Choices,
) -> dict:
    """The metrics of the deployed model (each fold's own choice and thresholds, on its test
    part) at the top level, with the HybridViT and the forest alone beside it."""
    names = data.class_names.to_list()
    deployed = choices.test_probs(outcomes, baseline)
    fold_entries, event_entries, n_mixed_total, n_events_total = [], [], 0, 0
    for fold, outcome, probs, decision in zip(
        folds, outcomes, deployed, choices.folds, strict=True
    ):
        y = data.labels[fold.test]
        trace, event, n_mixed, n_events = fold_metrics(
            y, probs, data.source_ids[fold.test], names, decision.thresholds
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
                "decision": decision.to_dict(),
                **trace,
            }
        )
        event_entries.append({"fold": fold.index, "n_events": n_events, **event})
    tests = [(f.index, data.labels[f.test], data.source_ids[f.test]) for f in folds]
    result = {
        "classes": names,
        "model": "the deployed model: in each fold, the model chosen on the other folds' "
        "out-of-fold predictions (with one fold, on its validation split) and its thresholds "
        "on the fold's validation split (quake.training.choice), scored on its test part",
        "deployed_decision": choices.deployed.to_dict(),
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
        "hybridvit": {
            "model": "the fold HybridViTs alone, each at thresholds chosen on its validation split",
            "decisions": [d.to_dict() for d in choices.hybrid],
            **fold_level_metrics(
                tests, [o.probs for o in outcomes], names, [d.thresholds for d in choices.hybrid]
            ),
        },
        "baseline": None,
    }
    if baseline is not None:
        result["baseline"] = {
            "model": baseline["model"],
            "n_features": len(baseline["feature_names"]),
            "features": baseline["feature_names"],
            "feature_segments": baseline["segments"],
            "fit_on": "each fold's training + validation traces; tested on the same test folds; "
            "thresholds chosen on the validation split by a forest of the training part",
            "decisions": [d.to_dict() for d in choices.forest],
            **fold_level_metrics(
                tests, baseline["probs"], names, [d.thresholds for d in choices.forest]
            ),
        }
    return result


def combined_from_predictions(run_dir: Path, hybrid_weight: float) -> dict:
    """The ``combined`` block of a finished run's metrics.json at another ``hybrid_weight``,
    from the test predictions it wrote for the HybridViT and the baseline (nothing retrained):
    how the deployed combination would have scored on the same folds."""
    run_dir = Path(run_dir)
    ours = pd.read_csv(run_dir / HYBRIDVIT_PREDICTIONS).sort_values("index")
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
    tests: list[tuple[int, np.ndarray, np.ndarray]],
    probs: list[np.ndarray],
    class_names,
    thresholds: list | None = None,
) -> dict:
    """Per-fold trace and event metrics of one model's test probabilities and their mean ± std.

    ``tests``: per fold ``(fold index, labels, source ids)`` of its test items, ``probs`` the
    model's ``(n_test, C)`` probabilities of them, ``thresholds`` its decision thresholds per
    fold (None: argmax). Used for the parts alone (and by ``benchmarks/bench_recipe.py`` on
    the predictions a run wrote)."""
    thresholds = thresholds or [None] * len(tests)
    trace_folds, event_folds = [], []
    for (index, y, groups), p, t in zip(tests, probs, thresholds, strict=True):
        trace, event, _, n_events = fold_metrics(y, p, groups, class_names, t)
        trace_folds.append({"fold": index, "n_test": int(len(y)), **trace})
        event_folds.append({"fold": index, "n_events": n_events, **event})
    return {
        "folds": trace_folds,
        "aggregate": M.aggregate(trace_folds),
        "event_level": {"folds": event_folds, "aggregate": M.aggregate(event_folds)},
    }


#: The HybridViT folds' test predictions (``predictions.csv`` holds the deployed model's).
HYBRIDVIT_PREDICTIONS = "hybridvit_predictions.csv"


def write_predictions(
    data, folds, outcomes, choices: Choices, baseline: dict | None, run_dir: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The out-of-fold test predictions of the deployed model (``predictions.csv``, with the
    class each fold's thresholds decide) and of the HybridViT alone; returns both."""

    def frame(probs_per_fold, decisions=None) -> pd.DataFrame:
        frames = []
        for k, (f, p) in enumerate(zip(folds, probs_per_fold, strict=True)):
            part = predictions_frame(data, f.test, p, f.index)
            if decisions is not None:
                decided = decide(p, decisions[k].thresholds)
                part["predicted_class"] = data.class_names.decode(decided)
            frames.append(part)
        return pd.concat(frames)

    deployed = frame(choices.test_probs(outcomes, baseline), choices.folds)
    hybrid = frame([o.probs for o in outcomes])
    write_text_atomic(run_dir / "predictions.csv", deployed.to_csv(index=False))
    write_text_atomic(run_dir / HYBRIDVIT_PREDICTIONS, hybrid.to_csv(index=False))
    return deployed, hybrid


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
    predictions: pd.DataFrame, choices: Choices,
) -> dict:  # fmt: skip
    """Write the plots and the explanation figures of the deployed model (``predictions``: its
    ``predictions.csv``), the forest alone beside it (the HybridViT when the forest is the
    deployed model); what ``metrics.json`` says of the explanation figures."""
    names = data.class_names
    forest_deployed = choices.deployed.model == "forest"
    if forest_deployed or baseline is None:
        beside_label, beside = "HybridViT alone", [o.probs for o in outcomes]
    else:
        beside_label, beside = "forest alone", baseline["probs"]
    plot_input = {
        "class_names": names.to_list(),
        "y_true": predictions["y_true"].to_numpy(),
        "probs": probs_from_frame(predictions, names),
        "baseline_probs": np.concatenate(beside),
        "beside": beside_label,
        "confusion_matrix": np.asarray(results["confusion_matrix_total"]),
        "histories": [o.history for o in outcomes],
        "best_epochs": [o.best_epoch for o in outcomes],
    }
    report.write_plots(run_dir, plot_input)
    beside_frame = pd.concat(
        [predictions_frame(data, f.test, p, f.index) for f, p in zip(folds, beside, strict=True)]
    )
    return report_figures.write_explanations(
        run_dir,
        predictions,
        data.waveforms,
        data.labels,
        names.to_list(),
        data.preprocess,
        report_figures.item_metadata(dataset.metadata, data.trace_names),
        seed=config.seed,
        baseline_predictions=beside_frame,
        beside=beside_label,
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
    """``deployed (combined 0.4) 0.967 ± 0.009, HybridViT 0.956, forest 0.956``: the model in
    ``model/`` first, so that the last line of a run names what was deployed."""

    def figure(block: dict) -> str:
        agg = block["aggregate"]["macro_f1"]
        return f"{agg['mean']:.3f} ± {agg['std']:.3f}"

    decision = metrics["deployed_decision"]
    model = decision["model"]
    if model == "combined":
        model += f" {decision['hybrid_weight']:g}"
    parts = [f"deployed ({model}) {figure(metrics)}"]
    for name, key in (("HybridViT", "hybridvit"), ("forest", "baseline")):
        if metrics.get(key):
            parts.append(f"{name} {figure(metrics[key])}")
    return ", ".join(parts)


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
