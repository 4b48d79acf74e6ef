"""Validation probabilities the choice of the deployed model can trust.

A fold keeps the epochs whose validation score is best (:mod:`quake.training.selection`), so
the kept weights' probabilities of those very validation events are optimistic: on a split of
five events the epochs that fit them best are kept, and the HybridViT looks better there than
on new events (on esec-surface, event log loss 1.07 on validation against 1.29 on test). The
deployed model is chosen on validation (:mod:`quake.training.choice`), so that optimism would
favour the HybridViT over the forest, whose validation probabilities come from a forest that
never saw the validation part.

The remedy is leave-one-event-out selection: each validation event gets the probabilities of
the epochs the fold would have kept had that event not been in the split (the same rule:
metric, ``min_epochs``, smoothing, patience, the ``average_best`` best epochs). Its own
probabilities then did not choose their epochs. The kept epochs' probabilities are averaged
where the fold averages their weights: close, not equal (on esec-surface 1.059 against 1.071).
On a split of many events leaving one out moves no choice and the probabilities are those of
the kept epochs; on a handful it removes most of the optimism.
"""

from __future__ import annotations

import math

import numpy as np

from quake.probabilities import LOG_PROB_EPS
from quake.training.selection import CheckpointRule


def kept_epochs(
    scores: np.ndarray,
    *,
    min_epochs: int = 0,
    smoothing: int = 1,
    patience: int | None = None,
    frozen_epochs: int = 0,
    keep: int = 1,
) -> list[int]:
    """The 1-based epochs the training loop keeps for this validation curve (higher is better):
    :class:`CheckpointRule` and the ``keep`` best judged epochs, as ``train_fold`` does."""
    rule = CheckpointRule(min_epochs=min_epochs, smoothing=smoothing, patience=patience)
    offered: list[tuple[float, int]] = []
    for epoch, score in enumerate(scores, start=1):
        _, stop = rule.update(float(score))
        if rule.judged_score is not None and math.isfinite(rule.judged_score):
            offered.append((rule.judged_score, epoch))
        if stop and epoch > frozen_epochs:
            break
    offered.sort(key=lambda entry: -entry[0])  # stable: the earlier epoch first on a tie
    return [epoch for _, epoch in offered[:keep]]


def held_out_probabilities(
    epoch_probs: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    metric: str,
    class_weights: np.ndarray | None = None,
    min_epochs: int = 0,
    smoothing: int = 1,
    patience: int | None = None,
    frozen_epochs: int = 0,
    keep: int = 1,
) -> np.ndarray | None:
    """Per validation item, the mean probabilities of the epochs kept on the other events
    (module doc). ``epoch_probs``: (epochs, items, classes), the judged weights' validation
    probabilities after each epoch; ``metric``: ``optim.selection_metric``; ``class_weights``:
    the loss's class weights (None: unweighted). None when the split holds fewer than two
    events (nothing is left to choose on)."""
    epoch_probs = np.asarray(epoch_probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    names, event = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    if len(names) < 2 or epoch_probs.ndim != 3 or not len(epoch_probs):
        return None
    n_epochs, n_items, n_classes = epoch_probs.shape
    scores_without = _Scores(epoch_probs, labels, n_classes, class_weights)
    out = np.empty((n_items, n_classes))
    for g in range(len(names)):
        held = event == g
        epochs = kept_epochs(
            scores_without(held, metric),
            min_epochs=min_epochs,
            smoothing=smoothing,
            patience=patience,
            frozen_epochs=frozen_epochs,
            keep=keep,
        )
        chosen = np.asarray(epochs or [n_epochs], dtype=np.int64) - 1  # none: the last weights
        out[held] = epoch_probs[chosen][:, held].mean(axis=0)
    return out


class _Scores:
    """Each epoch's validation score (higher is better) without some items, from running sums:
    the class-weighted log loss and the confusion matrix that ``loop.evaluate`` computes."""

    def __init__(
        self, probs: np.ndarray, labels: np.ndarray, n_classes: int, weights: np.ndarray | None
    ):
        clipped = np.clip(probs, LOG_PROB_EPS, 1.0)
        clipped /= clipped.sum(axis=2, keepdims=True)
        rows = np.arange(len(labels))
        self.weight = np.ones(len(labels)) if weights is None else np.asarray(weights)[labels]
        self.loss = -np.log(clipped[:, rows, labels]) * self.weight  # (epochs, items)
        self.cell = labels * n_classes + probs.argmax(axis=2)  # (epochs, items): confusion cell
        self.labels, self.n_classes = labels, n_classes

    def __call__(self, held: np.ndarray, metric: str) -> np.ndarray:
        rest = ~held
        if metric == "loss":
            return -self.loss[:, rest].sum(axis=1) / self.weight[rest].sum()
        c = self.n_classes
        scores = []
        for cells in self.cell[:, rest]:
            confusion = np.bincount(cells, minlength=c * c).reshape(c, c).astype(np.float64)
            scores.append(_from_confusion(confusion, metric))
        return np.asarray(scores)


def _from_confusion(confusion: np.ndarray, metric: str) -> float:
    """Macro F1 (every class, 0 where undefined) or balanced accuracy (the classes present),
    as scikit-learn computes them in ``loop.evaluate``."""
    true_counts, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    hits = np.diag(confusion)
    if metric == "balanced_accuracy":
        present = true_counts > 0
        return float(np.mean(hits[present] / true_counts[present])) if present.any() else 0.0
    if metric == "macro_f1":
        denominator = true_counts + predicted
        f1 = np.divide(2 * hits, denominator, out=np.zeros_like(hits), where=denominator > 0)
        return float(f1.mean())
    raise ValueError(
        f"optim.selection_metric {metric!r}: expected loss, balanced_accuracy or macro_f1"
    )
