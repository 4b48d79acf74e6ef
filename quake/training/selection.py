"""Which weights a fold keeps: a rule that a tiny validation split cannot fool.

A fold's validation split can be a couple of dozen traces. Picking the single best epoch on it
is noisy: one lucky early epoch (a model still predicting mostly one class) can win and be kept,
and the fold collapses on its test part. Four guards, each measured (benchmarks/choosing-the-recipe.md); the last is on
by default (the mean of the 3 best epochs), the others optional:

- ``min_epochs``: no epoch before it is kept, and early stopping does not count before it;
- ``selection_smoothing``: an epoch is judged by the mean validation score of the last k epochs,
  so a single spike does not win;
- ``ema_decay``: the weights judged and kept are an exponential moving average of the weights
  over the training steps (:class:`WeightAverage`), smoother than any one step's;
- ``average_best``: the fold keeps the mean of the weights of its k best epochs
  (:class:`BestEpochs`), so no single epoch's luck decides alone.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn


class CheckpointRule:
    """Online: feed each epoch's validation score (higher is better) to :meth:`update`; it says
    whether this epoch is the best so far (keep its weights) and whether to stop."""

    def __init__(self, *, min_epochs: int = 0, smoothing: int = 1, patience: int | None = None):
        self.min_epochs = min_epochs
        self.smoothing = smoothing
        self.patience = patience
        self.scores: list[float] = []
        self.judged_score: float | None = None  # the last epoch's; None before min_epochs
        self.best_epoch = 0
        self.best_score = -math.inf
        self._since_best = 0

    def smoothed(self) -> float:
        """The mean of the last ``smoothing`` scores (fewer at the start)."""
        window = self.scores[-self.smoothing :]
        return sum(window) / len(window)

    def update(self, score: float) -> tuple[bool, bool]:
        """``(improved, stop)`` after the next epoch's ``score``."""
        self.scores.append(float(score))
        epoch = len(self.scores)
        if epoch < self.min_epochs:
            self.judged_score = None
            return False, False
        self.judged_score = judged = self.smoothed()
        improved = judged > self.best_score
        if improved:
            self.best_epoch, self.best_score, self._since_best = epoch, judged, 0
        else:
            self._since_best += 1
        stop = self.patience is not None and self._since_best >= self.patience
        return improved, stop


def choose_epoch(
    scores: Sequence[float],
    *,
    min_epochs: int = 0,
    smoothing: int = 1,
    patience: int | None = None,
) -> tuple[int, int]:
    """``(kept epoch, last epoch trained)`` for a whole validation curve (1-based epochs)."""
    rule = CheckpointRule(min_epochs=min_epochs, smoothing=smoothing, patience=patience)
    for epoch, score in enumerate(scores, start=1):
        _, stop = rule.update(score)
        if stop:
            return rule.best_epoch, epoch
    return rule.best_epoch, len(scores)


class WeightAverage:
    """An exponential moving average of a model's weights, updated after every optimizer step.

    ``decay`` is reached gradually (``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, as
    in timm's ``ModelEmaV3``), so the first epochs are not dominated by the random init.
    Integer buffers (BatchNorm's step count) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"optim.ema_decay {decay!r}: expected a float in (0, 1) or null")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        averaged = self.model.state_dict()
        for name, value in model.state_dict().items():
            target = averaged[name]
            if target.dtype.is_floating_point:
                target.lerp_(value.detach(), 1.0 - decay)
            else:
                target.copy_(value)


class BestEpochs:
    """The weights of the ``k`` best epochs so far (by a score, higher is better) and their
    mean: a model averaged over epochs of one run stays in one basin, and its validation luck is
    spread over k epochs. Integer buffers (BatchNorm's step count) come from the best epoch."""

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"optim.average_best {k!r}: expected an integer >= 1")
        self.k = k
        self.kept: list[tuple[float, int, dict[str, torch.Tensor]]] = []  # best first

    def offer(self, score: float, epoch: int, model: nn.Module) -> bool:
        """Keep a copy of ``model``'s weights if ``score`` is among the ``k`` best; whether it was."""
        if len(self.kept) == self.k and score <= self.kept[-1][0]:
            return False
        state = {name: v.detach().cpu().clone() for name, v in model.state_dict().items()}
        self.kept.append((float(score), epoch, state))
        self.kept.sort(key=lambda entry: -entry[0])
        del self.kept[self.k :]
        return True

    @property
    def epochs(self) -> list[int]:
        """The kept epochs, best first."""
        return [epoch for _, epoch, _ in self.kept]

    def averaged(self) -> dict[str, torch.Tensor] | None:
        """The mean of the kept weights (None before any epoch was offered)."""
        if not self.kept:
            return None
        states = [state for _, _, state in self.kept]
        out = {}
        for name, best in states[0].items():
            if best.dtype.is_floating_point:
                out[name] = torch.stack([state[name] for state in states]).mean(dim=0)
            else:
                out[name] = best.clone()
        return out
