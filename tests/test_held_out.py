"""Leave-one-event-out epoch selection (quake.training.held_out): each validation event's
probabilities come from the epochs kept without it, by the training loop's own rule."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from tiny_run import tiny_run_config

from quake.training import train
from quake.training.choice import event_losses
from quake.training.cross_validation import VAL_HELD_OUT_PREDICTIONS, VAL_PREDICTIONS
from quake.training.held_out import held_out_probabilities, kept_epochs


def _two_class(p_true: list[list[float]], labels: list[int]) -> np.ndarray:
    """(epochs, items, 2) probabilities from each epoch's probability of the true class."""
    p_true = np.asarray(p_true, dtype=np.float64)
    labels = np.asarray(labels)
    p1 = np.where(labels == 1, p_true, 1.0 - p_true)
    return np.stack([1.0 - p1, p1], axis=-1)


def test_an_event_does_not_choose_its_own_epochs():
    """Three events, three epochs. Epoch 2 is kept on all of them only because event a fits it
    so well; without a the others keep epoch 3, so a's held-out probabilities are epoch 3's,
    while b and c, whose absence changes nothing, get epoch 2's like the fold."""
    labels = [1, 0, 1]
    probs = _two_class([[0.5, 0.5, 0.5], [0.99, 0.6, 0.6], [0.3, 0.7, 0.7]], labels)
    groups = np.array(["a", "b", "c"])
    scores = [-np.mean(-np.log(probs[e, np.arange(3), labels])) for e in range(3)]
    assert kept_epochs(scores) == [2]  # the fold's own choice
    out = held_out_probabilities(probs, np.array(labels), groups, metric="loss")
    np.testing.assert_allclose(out[0], probs[2, 0])
    np.testing.assert_allclose(out[1:], probs[1, 1:])


def test_the_kept_epochs_follow_the_loop_rule():
    """min_epochs, smoothing, patience and the k best, as train_fold applies them."""
    scores = [0.9, 0.1, 0.5, 0.6, 0.2, 0.3, 0.95]
    assert kept_epochs(scores, keep=2) == [7, 1]
    assert kept_epochs(scores, min_epochs=2, keep=2) == [7, 4]
    assert kept_epochs(scores, patience=2, keep=1) == [1]  # stops after epoch 3
    assert kept_epochs(scores, smoothing=2, keep=1) == [1]  # the first epoch is judged alone
    assert kept_epochs(scores, smoothing=2, min_epochs=3, keep=2) == [7, 4]


def test_many_events_average_the_kept_epochs_and_one_event_gives_none():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    probs = rng.dirichlet(np.ones(3), size=(5, 60))
    probs[3, np.arange(60), labels] += 2.0  # epoch 4 clearly best, epoch 5 next
    probs[4, np.arange(60), labels] += 1.0
    probs /= probs.sum(axis=2, keepdims=True)
    groups = np.array([f"e{i}" for i in range(60)])
    out = held_out_probabilities(probs, labels, groups, metric="macro_f1", keep=2)
    np.testing.assert_allclose(out, probs[[3, 4]].mean(axis=0))
    assert held_out_probabilities(probs, labels, np.full(60, "one"), metric="loss") is None
    with pytest.raises(ValueError, match="'auc'"):
        held_out_probabilities(probs, labels, groups, metric="auc")


@pytest.mark.slow
def test_a_run_saves_and_chooses_on_held_out_probabilities(real_data_dir, tmp_path):
    """Real esec-surface, three epochs: every fold writes its held-out validation probabilities
    beside the kept epochs' (the same items, rows summing to 1), and the HybridViT's validation
    log loss its decision records is that of the held-out ones."""
    config = tiny_run_config(
        real_data_dir / "esec-surface", tmp_path / "run", **{"optim.epochs": 3}
    )
    run = train(config).run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    for k, fold in enumerate(sorted((run / "folds").glob("fold_*"))):
        kept = pd.read_csv(fold / VAL_PREDICTIONS)
        held = pd.read_csv(fold / VAL_HELD_OUT_PREDICTIONS)
        assert held["index"].tolist() == kept["index"].tolist()
        columns = [c for c in held.columns if c.startswith("prob_")]
        np.testing.assert_allclose(held[columns].sum(axis=1), 1.0, atol=1e-5)
        losses = event_losses(
            held[columns].to_numpy(),
            held["y_true"].to_numpy(),
            held["source_id"].astype(str).to_numpy(),
        )
        recorded = metrics["folds"][k]["decision"]["val_event_log_loss"]["1"]
        assert recorded == pytest.approx(losses.mean(), rel=1e-6)
