"""The model a training run deploys in ``<run>/model/``: the HybridViT ensemble, the fold
forests or their combination (chosen on out-of-fold predictions,
:mod:`quake.training.choice`), its decision thresholds, the catalog context where trained with
it, and what the report says of it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from quake.data.components import anchor_kind
from quake.deploy.card import events_digest
from quake.deploy.combined import CombinedClassifier
from quake.deploy.ensemble import KEPT_DIR, EventClassifier
from quake.deploy.forest import BaselineClassifier, forest_arrays, forest_graphs
from quake.models.context import event_table
from quake.training import report_figures
from quake.training.choice import Choices
from quake.training.config import TrainConfig
from quake.training.context import cross_validate_context
from quake.training.cross_validation import (
    CVData,
)

DEPLOY_NOTE = (
    "the ensemble of the {k} fold models, probabilities averaged. Why an ensemble rather than a "
    "refit on all data: it costs no extra training; every member chose its own checkpoint on its "
    "own grouped validation split, so no epoch count has to be carried over to a refit on more "
    "data, where it would no longer be validated; and averaging {k} models lowers the variance "
    "of the predictions. The cross-validated figures are those of single fold models, so they "
    "are, if anything, a conservative estimate for the ensemble"
)


def save_deployed(classifier, context_models, target: Path) -> Path:
    """``model/`` in one step: the deployed classifier and, with catalog context, its
    ``context.json`` appear together or not at all."""
    classifier.context_models = context_models
    return classifier.save(target)


#: What ``model/`` holds for each model a run can deploy (metrics.json and report.md).
DEPLOY_NOTES = {
    "HybridViT": DEPLOY_NOTE,
    "combined": "the HybridViT and the random forests, combined per window by the normalised "
    "geometric mean of their probabilities, the HybridViT's share of the vote {w:g} "
    "(quake.deploy.combined). "
    "HybridViT part (hybridvit/): "
    + DEPLOY_NOTE
    + ". Forest part (baseline/): the {k} fold random forests, probabilities averaged",
    "forest": "the {k} fold random forests on spectral features, probabilities averaged "
    "(quake.deploy.forest); the HybridViT ensemble is kept in {hybrid}/",
}


def baseline_classifier(baseline: dict, data: CVData, run_dir: Path):
    """The fold forests of the baseline as a deployable BaselineClassifier, with their ONNX
    graphs (converted here, while the fitted sklearn forests exist)."""
    forests = [forest_arrays(f, data.n_classes) for f in baseline["forests"]]
    digest = hashlib.sha256()
    for forest in forests:
        for name in sorted(forest):
            digest.update(forest[name].tobytes())
    return BaselineClassifier(
        forests,
        data.preprocess,
        data.class_names,
        model_id=f"{run_dir.name}-rf-{digest.hexdigest()[:8]}",
        info={"run": run_dir.name, "model": baseline["model"]},
        graphs=forest_graphs(baseline["forests"]),
    )


def context_on_deployed(
    config: TrainConfig, dataset, data, folds, choices: Choices, outcomes, baseline
):
    """The catalog-context model cross-validated on the deployed model's probabilities: its
    metrics and its per-fold models."""
    return cross_validate_context(
        event_table(
            report_figures.item_metadata(dataset.metadata, data.trace_names),
            data.source_ids,
        ),
        data.labels,
        data.source_ids,
        folds,
        choices.test_probs(outcomes, baseline),
        data.class_names.to_list(),
        config.context.timezone,
    )


def deployed_classifier(
    choices: Choices, classifier: EventClassifier, baseline, data, run_dir: Path
):
    """The classifier the run deploys, with its decision thresholds (the HybridViT ensemble is
    kept beside the forests when they are deployed alone)."""
    decision = choices.deployed
    if decision.model == "forest":
        classifier.save(run_dir / KEPT_DIR)  # kept, not deployed
        deployed = baseline_classifier(baseline, data, run_dir)
    elif decision.model == "combined":
        deployed = CombinedClassifier(
            classifier,
            baseline_classifier(baseline, data, run_dir),
            info={"run": run_dir.name, "strategy": "combined"},
            hybrid_weight=decision.hybrid_weight,
        )
    else:
        deployed = classifier
    deployed.decision_thresholds = decision.thresholds
    return deployed


def deploy_summary(config: TrainConfig, choices: Choices, members: int) -> dict:
    """What ``metrics.json`` says of the deployed model and why it was chosen."""
    decision = choices.deployed
    return {
        "strategy": config.deploy.strategy,
        "model": decision.model,
        "members": members,
        "folder": "model",
        "why": DEPLOY_NOTES[decision.model].format(
            k=members, hybrid=KEPT_DIR, w=decision.hybrid_weight
        ),
        "decision": decision.to_dict(),
        "catalog_context": config.context.enabled,
    }


def model_card(dataset, data, results: dict, model: str) -> dict:
    """The card of :mod:`quake.deploy.card` for the deployed ``model`` (``results``: the run's
    metrics, the deployed model's at the top level)."""
    meta = report_figures.item_metadata(dataset.metadata, data.trace_names)

    def counts(column: str) -> dict[str, int]:
        if column not in meta.columns:
            return {}
        values = meta[column].dropna().astype(str)
        return {str(k): int(n) for k, n in values.value_counts().sort_index().items()}

    stations = (
        meta["station_network_code"].astype(str) + "." + meta["station_code"].astype(str)
        if {"station_network_code", "station_code"} <= set(meta.columns)
        else pd.Series([], dtype=str)
    )
    rates = (
        "trace_original_sampling_rate_hz"
        if "trace_original_sampling_rate_hz" in meta.columns
        else "trace_sampling_rate_hz"
    )
    events = sorted({str(e) for e in data.source_ids})
    labels, n = np.unique(data.labels, return_counts=True)
    preprocess = data.preprocess
    return {
        "classes": {data.class_names[int(k)]: int(c) for k, c in zip(labels, n, strict=True)},
        "training_events": events,
        "training_events_sha256": events_digest(events),
        "stations": sorted(set(stations.dropna())),
        "components": counts("trace_components"),
        "sampling_rates_hz": counts(rates),
        "window": {
            "anchor": preprocess.anchor,
            "anchored_at": anchored_at(meta, preprocess),
            "length_s": preprocess.window_s,
            "sampling_rate_hz": preprocess.sampling_rate_hz,
            "per_recording": preprocess.windows_per_recording,
        },
        "cross_validated": {"model": model, **cross_validated_figures(results)},
    }


def anchored_at(meta: pd.DataFrame, preprocess) -> dict[str, int]:
    """Where the training windows started (``p_pick``, ``origin_time``, ``trace_start``) ->
    windows: what ``anchor: p_arrival`` resolved to, item by item."""

    def known(*columns: str) -> np.ndarray:
        present = np.ones(len(meta), dtype=bool)
        for column in columns:
            values = meta[column] if column in meta.columns else pd.Series([None] * len(meta))
            present &= values.notna().to_numpy() & (values.astype(str) != "").to_numpy()
        return present

    kinds = [
        anchor_kind(preprocess, bool(p), bool(o))
        for p, o in zip(
            known("trace_p_arrival_sample"),
            known("source_origin_time", "trace_start_time"),
            strict=True,
        )
    ]
    values, counts = np.unique(np.asarray(kinds, dtype=str), return_counts=True)
    return {str(k): int(n) for k, n in zip(values, counts, strict=True)}


def cross_validated_figures(results: dict) -> dict:
    """Mean, std and worst fold of the deployed model's macro F1 and balanced accuracy, at
    trace and event level."""
    figures = {}
    for level, part in (("trace", results), ("event", results.get("event_level") or {})):
        for metric in ("macro_f1", "balanced_accuracy"):
            folds = [f[metric] for f in part.get("folds", []) if metric in f]
            if folds:
                figures[f"{level}_{metric}"] = {
                    "mean": float(np.mean(folds)),
                    "std": float(np.std(folds)),
                    "worst_fold": float(np.min(folds)),
                }
    return figures
