"""The checkpoint rule on crafted validation curves, and the weight average."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from quake.training.selection import BestEpochs, CheckpointRule, WeightAverage, choose_epoch

# A curve like the one that collapsed a fold: a lucky spike at epoch 1 on a tiny validation
# split, a dip, then a steady climb to a plateau from epoch 8 on.
SPIKY = [0.90, 0.55, 0.60, 0.70, 0.75, 0.80, 0.84, 0.88, 0.89, 0.88, 0.89, 0.87]


def test_the_plain_rule_keeps_the_lucky_first_epoch():
    assert choose_epoch(SPIKY) == (1, 12)
    assert choose_epoch(SPIKY, patience=3) == (1, 4)  # and stops before the model has learnt


def test_min_epochs_ignores_the_early_spike_and_does_not_stop_before_it():
    best, last = choose_epoch(SPIKY, min_epochs=5, patience=3)
    assert best == 9 and last == 12


def test_smoothing_judges_an_epoch_by_the_last_k_scores():
    # a single spike at 6 loses against a plateau whose last three epochs average higher
    curve = [0.5, 0.6, 0.6, 0.6, 0.6, 0.95, 0.6, 0.8, 0.8, 0.8]
    assert choose_epoch(curve) == (6, 10)
    assert choose_epoch(curve, smoothing=3) == (10, 10)
    rule = CheckpointRule(smoothing=3)
    for score in (0.2, 0.4):
        rule.update(score)
    assert rule.smoothed() == pytest.approx(0.3)  # fewer than k scores at the start


def test_patience_counts_epochs_without_improvement():
    curve = [0.1, 0.5, 0.4, 0.4, 0.4, 0.9]
    assert choose_epoch(curve, patience=3) == (2, 5)
    assert choose_epoch(curve, patience=4) == (6, 6)


def test_the_weight_average_follows_the_weights_with_its_decay():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.9)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[1].num_batches_tracked.fill_(7)
    average.update(model)  # first update: decay min(0.9, 1/10) = 0.1
    expected = start + 0.9 * 1.0
    torch.testing.assert_close(average.model[0].weight, expected)
    assert int(average.model[1].num_batches_tracked) == 7  # integers copied
    for _ in range(200):
        average.update(model)
    torch.testing.assert_close(average.model[0].weight, start + 1.0, atol=1e-6, rtol=0)
    assert not any(p.requires_grad for p in average.model.parameters())
    with pytest.raises(ValueError, match=r"optim.ema_decay 1.0: expected a float in \(0, 1\)"):
        WeightAverage(model, decay=1.0)


def test_the_k_best_epochs_are_kept_and_averaged():
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    best = BestEpochs(3)
    assert best.averaged() is None
    # validation scores (higher is better) of epochs 1-5; the weight is set to the epoch number
    for epoch, score in enumerate([-0.9, -0.5, -0.7, -0.2, -0.8], start=1):
        with torch.no_grad():
            model[0].weight.fill_(float(epoch))
        model[1].num_batches_tracked.fill_(epoch)
        best.offer(score, epoch, model)
    assert best.epochs == [4, 2, 3]  # best first; epochs 1 and 5 dropped
    kept = best.averaged()
    torch.testing.assert_close(kept["0.weight"], torch.tensor([[3.0]]))  # (4 + 2 + 3) / 3
    assert int(kept["1.num_batches_tracked"]) == 4  # integers from the best epoch
    assert not best.offer(-0.95, 6, model)  # worse than all three kept
    one = BestEpochs(1)
    for epoch, score in enumerate([-0.9, -0.5, -0.5], start=1):
        one.offer(score, epoch, model)
    assert one.epochs == [2]  # a tie does not replace the earlier epoch (as CheckpointRule)
    with pytest.raises(ValueError, match="optim.average_best 0"):
        BestEpochs(0)
