"""Metrics: agreement with scikit-learn, ECE by hand, event-level combination, aggregation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    roc_auc_score,
)

from quake.training.metrics import (
    SCALAR_METRICS,
    aggregate,
    classification_metrics,
    combine_by_event,
    expected_calibration_error,
    one_vs_rest_auc,
)

NAMES = ["earthquake", "explosion", "noise"]


@pytest.fixture
def predictions():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3))
    logits[np.arange(200), y] += 1.5  # informative but imperfect
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def test_metrics_agree_with_sklearn(predictions):
    y, probs = predictions
    m = classification_metrics(y, probs, NAMES)
    pred = probs.argmax(axis=1)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(
        roc_auc_score(y, probs, multi_class="ovr", average="macro")
    )
    onehot = np.eye(3)[y]
    assert m["pr_auc"] == pytest.approx(average_precision_score(onehot, probs, average="macro"))
    assert m["log_loss"] == pytest.approx(log_loss(y, probs), rel=1e-6)
    assert np.asarray(m["confusion_matrix"]).sum() == len(y)
    assert sum(c["support"] for c in m["per_class"].values()) == len(y)
    assert set(m) >= set(SCALAR_METRICS)


def test_binary_roc_auc_is_the_ordinary_auc():
    y = np.array([0, 0, 1, 1, 1, 0])
    p1 = np.array([0.1, 0.6, 0.7, 0.8, 0.4, 0.2])
    probs = np.column_stack([1 - p1, p1])
    assert one_vs_rest_auc(y, probs, "roc") == pytest.approx(roc_auc_score(y, p1))


def test_auc_skips_classes_absent_from_the_test_fold():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1]])
    assert one_vs_rest_auc(y, probs, "roc") == pytest.approx(1.0)
    assert one_vs_rest_auc(np.zeros(4, int), probs, "roc") is None


def test_ece_by_hand():
    # two confident correct predictions (conf 0.9) and two confident wrong ones (conf 0.7)
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.7, 0.3], [0.7, 0.3]])
    # bin of 0.9: accuracy 1, confidence 0.9 -> gap 0.1; bin of 0.7: accuracy 0 -> gap 0.7
    assert expected_calibration_error(y, probs) == pytest.approx(0.5 * 0.1 + 0.5 * 0.7)
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(np.array([0, 1]), perfect) == pytest.approx(0.0)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="probs must have shape"):
        classification_metrics(np.array([0, 1]), np.ones((3, 2)) / 2, ["earthquake", "noise"])
    with pytest.raises(ValueError, match="labels must be in"):
        classification_metrics(np.array([0, 2]), np.ones((2, 2)) / 2, ["earthquake", "noise"])
    with pytest.raises(ValueError, match="2 class names for 3"):
        classification_metrics(np.array([0, 1]), np.ones((2, 3)) / 3, ["earthquake", "noise"])


def test_event_combination_is_normalised_geometric_mean():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    y = np.array([0, 0, 1])
    event_probs, event_true, ids, n_mixed = combine_by_event(probs, y, ["a", "a", "b"])
    assert list(ids) == ["a", "b"] and list(event_true) == [0, 1] and n_mixed == 0
    geo = np.sqrt((probs[0] + 1e-6) * (probs[1] + 1e-6))
    np.testing.assert_allclose(event_probs[0], geo / geo.sum(), rtol=1e-9)
    np.testing.assert_allclose(event_probs[1], probs[2], atol=1e-5)  # one station: itself


def test_event_combination_matches_batch_classification_rule():
    from quake.classify import combine_station_probabilities

    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=5)
    event_probs, *_ = combine_by_event(probs, np.zeros(5, int), ["e"] * 5)
    np.testing.assert_allclose(event_probs[0], combine_station_probabilities(probs), rtol=1e-9)


def test_source_id_with_several_labels_is_split_per_label():
    # an earthquake window and the noise window before it, cut from one recording
    probs = np.array([[0.8, 0.2], [0.3, 0.7]])
    event_probs, event_true, ids, n_mixed = combine_by_event(probs, np.array([0, 1]), ["r1", "r1"])
    assert n_mixed == 1 and sorted(event_true.tolist()) == [0, 1] and len(ids) == 2


def test_aggregate_is_mean_and_population_std():
    folds = [{name: 0.5 for name in SCALAR_METRICS}, {name: 0.7 for name in SCALAR_METRICS}]
    folds[1]["roc_auc"] = None  # a fold where AUC could not be computed
    agg = aggregate(folds)
    assert agg["macro_f1"]["mean"] == pytest.approx(0.6)
    assert agg["macro_f1"]["std"] == pytest.approx(0.1)
    assert agg["roc_auc"] == {"mean": 0.5, "std": 0.0, "n_folds": 1}
