"""Classification metrics, per fold and aggregated, trace level and event level.

Everything but the calibration error comes from scikit-learn so that the numbers in a report
can be recomputed from the saved predictions with the same library. Conventions:

- ``roc_auc``: one-vs-rest, macro over the classes present in ``y_true`` (for two classes this is
  the ordinary binary AUC); ``pr_auc``: average precision, one-vs-rest, macro likewise.
- ``ece``: expected calibration error of the top label, 15 equal-width confidence bins.
- Event level: the station probabilities of one ``source_id`` are combined by the mean of their
  log-probabilities, then softmax-normalised -- the rule batch classification uses, from the same
  code (:mod:`quake.probabilities`): every station votes with its confidence, and many stations
  do not make an event absurdly over-confident.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    log_loss,
    roc_auc_score,
)

from quake.probabilities import LOG_PROB_EPS, combine_groups, decide

SCALAR_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "ece",
)
ECE_BINS = 15


def _check_inputs(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != y_true.shape[0]:
        raise ValueError(
            f"probs must have shape (n, n_classes) with n={y_true.shape[0]}, got {probs.shape}"
        )
    if len(y_true) == 0:
        raise ValueError("cannot compute metrics on zero predictions")
    if y_true.min() < 0 or y_true.max() >= probs.shape[1]:
        raise ValueError(
            f"labels must be in [0, {probs.shape[1]}), got range [{y_true.min()}, {y_true.max()}]"
        )
    return y_true, probs


def reliability_bins(y_true: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> dict:
    """Top-label confidence vs accuracy in ``n_bins`` equal-width bins (for ECE and the plot)."""
    y_true, probs = _check_inputs(y_true, probs)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin b holds confidences in (edges[b], edges[b+1]]; confidence 0 goes to the first bin
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(np.float64)
    acc_sum = np.bincount(which, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(count > 0, acc_sum / count, np.nan)
        mean_confidence = np.where(count > 0, conf_sum / count, np.nan)
    return {
        "edges": edges.tolist(),
        "count": count.astype(int).tolist(),
        "accuracy": accuracy.tolist(),
        "confidence": mean_confidence.tolist(),
    }


def expected_calibration_error(
    y_true: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """Top-label ECE: sum over bins of (share of samples) * |accuracy - mean confidence|."""
    bins = reliability_bins(y_true, probs, n_bins)
    count = np.asarray(bins["count"], dtype=np.float64)
    gap = np.abs(
        np.nan_to_num(np.asarray(bins["accuracy"])) - np.nan_to_num(np.asarray(bins["confidence"]))
    )
    return float(np.sum(count / count.sum() * gap))


def one_vs_rest_auc(y_true: np.ndarray, probs: np.ndarray, kind: str = "roc") -> float | None:
    """Macro one-vs-rest ROC AUC (``kind="roc"``) or average precision (``kind="pr"``).

    Classes absent from ``y_true`` (or making up all of it) are left out of the mean;
    ``None`` when no class can be scored.
    """
    y_true, probs = _check_inputs(y_true, probs)
    scores = []
    for c in range(probs.shape[1]):
        positive = y_true == c
        if positive.all() or not positive.any():
            continue
        if kind == "roc":
            scores.append(roc_auc_score(positive, probs[:, c]))
        elif kind == "pr":
            scores.append(average_precision_score(positive, probs[:, c]))
        else:
            raise ValueError(f"kind must be 'roc' or 'pr', got {kind!r}")
    return float(np.mean(scores)) if scores else None


def classification_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    thresholds: Sequence[float] | np.ndarray | None = None,
) -> dict:
    """All metrics of one set of predictions: the scalars, per-class scores, confusion matrix.

    The decided class is the largest ``p_c / t_c`` of the model's decision ``thresholds``
    (:func:`quake.probabilities.decide`; None: the largest ``p_c``); the threshold-free scores
    (ROC and PR AUC, log loss, calibration) do not depend on them."""
    y_true, probs = _check_inputs(y_true, probs)
    n_classes = probs.shape[1]
    if len(class_names) != n_classes:
        raise ValueError(f"{len(class_names)} class names for {n_classes} probability columns")
    labels = list(range(n_classes))
    y_pred = decide(probs, thresholds)
    report = classification_report(
        y_true,
        y_pred,
        labels=labels,
        target_names=list(class_names),
        output_dict=True,
        zero_division=0,
    )
    per_class = {
        name: {
            "precision": float(report[name]["precision"]),
            "recall": float(report[name]["recall"]),
            "f1": float(report[name]["f1-score"]),
            "support": int(report[name]["support"]),
        }
        for name in class_names
    }
    clipped = np.clip(probs, LOG_PROB_EPS, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "per_class": per_class,
        "roc_auc": one_vs_rest_auc(y_true, probs, "roc"),
        "pr_auc": one_vs_rest_auc(y_true, probs, "pr"),
        "log_loss": float(log_loss(y_true, clipped, labels=labels)),
        "ece": expected_calibration_error(y_true, probs),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """scikit-learn's balanced accuracy: mean recall over the classes present in ``y_true``."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warns when y_pred has a class y_true lacks
        return balanced_accuracy_score(y_true, y_pred)


def combine_by_event(
    probs: np.ndarray, y_true: np.ndarray, source_ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Combine trace probabilities per event: mean log-probability, then softmax.

    Returns ``(event_probs, event_true, event_ids, n_mixed)``. A ``source_id`` whose traces carry
    different labels (e.g. an earthquake window and the noise window before it, cut from one
    recording) is not one event: its traces are combined per label and counted in ``n_mixed``.
    """
    y_true, probs = _check_inputs(y_true, probs)
    ids = np.asarray(source_ids).astype(str)
    frame = pd.DataFrame({"source_id": ids, "label": y_true})
    n_labels = frame.groupby("source_id")["label"].nunique()
    n_mixed = int((n_labels > 1).sum())
    key = np.where(
        frame["source_id"].map(n_labels).to_numpy() > 1,
        np.char.add(np.char.add(ids, "#"), y_true.astype(str)),
        ids,
    )
    codes, uniques = pd.factorize(key, sort=True)
    event_probs = combine_groups(probs, codes, len(uniques))
    event_true = np.zeros(len(uniques), dtype=np.int64)
    event_true[codes] = y_true
    return event_probs, event_true, np.asarray(uniques), n_mixed


def scalar_metrics(metrics: dict) -> dict:
    return {name: metrics[name] for name in SCALAR_METRICS}


def aggregate(per_fold: Sequence[dict]) -> dict:
    """Mean and (population) standard deviation over folds of every scalar metric."""
    result = {}
    for name in SCALAR_METRICS:
        values = [m[name] for m in per_fold if m.get(name) is not None and not _isnan(m[name])]
        if values:
            result[name] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values)),
                "n_folds": len(values),
            }
        else:
            result[name] = {"mean": None, "std": None, "n_folds": 0}
    return result


def _isnan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


#: Thresholds of the operating-point table: a class is flagged when its probability reaches one.
OPERATING_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def operating_points(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    thresholds: Sequence[float] = OPERATING_THRESHOLDS,
) -> dict:
    """Per class, one vs rest: what flagging a trace when ``probs[:, c] >= t`` gives at each
    threshold ``t`` -- ``flagged`` (traces at or above it), ``precision`` (share of those that
    are of class ``c``; None when none is flagged) and ``recall`` (share of the class's traces
    flagged; None when the class has none). Above 0.5 at most one class flags a trace, so a
    threshold is a rule "call it ``c`` only when sure", the rest going to an analyst."""
    y_true, probs = _check_inputs(y_true, probs)
    if len(class_names) != probs.shape[1]:
        raise ValueError(f"{len(class_names)} class names for {probs.shape[1]} probability columns")
    bad = [t for t in thresholds if not 0.0 < float(t) <= 1.0]
    if bad or not len(thresholds):
        raise ValueError(f"thresholds must be in (0, 1], got {list(thresholds)!r}")
    result = {}
    for c, name in enumerate(class_names):
        positive = y_true == c
        rows = []
        for t in thresholds:
            flagged = probs[:, c] >= float(t)
            hits = int(np.sum(flagged & positive))
            rows.append(
                {
                    "threshold": float(t),
                    "flagged": int(flagged.sum()),
                    "precision": hits / int(flagged.sum()) if flagged.any() else None,
                    "recall": hits / int(positive.sum()) if positive.any() else None,
                }
            )
        result[name] = {"support": int(positive.sum()), "points": rows}
    return result
