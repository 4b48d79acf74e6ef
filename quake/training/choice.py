"""Which model a run deploys, and its decision thresholds, chosen without the test fold.

A set decides which model wins: on some the HybridViT carries the decision, on small real sets
often the forest does. So the run does not read the answer off a table of other sets; it judges
the candidates on the user's own data, each on events the models that score them never trained
on:

- **the model**: the combination of the HybridViT and the forest at each weight of
  :data:`HYBRID_WEIGHTS` (0: the forest alone, 1: the HybridViT alone), scored by the
  event-level log loss (threshold-free: a model is judged by how it ranks and how sure it is,
  not by where a 0.5 cut happens to fall) on the **out-of-fold predictions of the other folds**:
  every event of fold ``j``'s test part, scored by fold ``j``'s HybridViT and forest, neither of
  which trained on it. Fold ``k``'s choice reads none of fold ``k``'s test events, and rests on
  about four fifths of the set rather than on its own validation split (on a set of 50-80
  events, a split of about five, on which the choice is close to a coin toss). The HybridViT's
  out-of-fold probabilities are also honest where its validation probabilities are not: it
  kept its best epochs on those very validation events.
  The one-standard-error rule of Breiman et al. (CART, 1984) then picks the smallest weight
  whose loss is within one standard error (of the best candidate's per-event losses) of the
  best: the smaller weight is the simpler, cheaper model, and a HybridViT at chance can still
  lower a log loss by softening an over-sure forest, which is no reason to deploy it. With a
  single fold (``cv.strategy: predefined``) there are no other folds: the fold's validation
  split decides.
- **the decision thresholds** of that model, on **the fold's own validation split**: a
  threshold places the boundaries on the probability scale of one model (how sure that fold's
  HybridViT and forest are), which other folds' models do not share. A class is decided by the
  largest ``p_c / t_c`` (:func:`quake.probabilities.decide`), ``t`` the class priors of the
  fold's training data raised to a power from :data:`PRIOR_POWERS` (0: plain argmax; 1: the
  balanced rule for a calibrated model, which maximises balanced accuracy in expectation).
  The same one-standard-error rule: among the powers whose event-level balanced accuracy on
  validation is within one (binomial) standard error of the best, the one nearest 1 (then the
  better trace-level balanced accuracy). One parameter, not one per class, because a
  validation split holds a handful of events.

The model in ``model/`` applies the same procedure to all the data: the weight on the
out-of-fold predictions of every fold, the thresholds on the validation predictions of all
folds pooled, with the priors of all the data.

What the cross-validated figures are: those of each fold's model under its own choice, judged on
a test fold that neither scored a candidate nor set a threshold. The other folds' models did
train on fold ``k``'s test events (each fold model trains on four fifths of the set), so the
choice is that of a cross-validation one level up, not of a fully nested one, which would
train every fold's models again inside each fold. Other rules (a paired comparison, a t-test,
the fold's own validation split) are measured in ``benchmarks/choice_rules.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from quake.deploy.combined import HYBRID_WEIGHTS, combine_parts
from quake.probabilities import LOG_PROB_EPS, decide
from quake.training.metrics import balanced_accuracy, combine_by_event

#: Powers of the training class priors the decision thresholds choose from (0: argmax).
PRIOR_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)


@dataclass
class Validation:
    """One fold's validation items: labels, events and each part's probabilities of them."""

    labels: np.ndarray
    groups: np.ndarray
    hybrid: np.ndarray | None  # (N, C) of the fold's HybridViT; None without one
    forest: np.ndarray | None  # (N, C) of a forest fitted on the fold's training part


@dataclass
class Decision:
    """A model (the HybridViT's share of the vote) and its decision thresholds."""

    hybrid_weight: float
    thresholds: np.ndarray
    prior_power: float
    event_log_loss: dict[float, float] = field(default_factory=dict)  # per candidate weight
    n_events: int = 0  # the events the weight was chosen on
    chosen_on: str = "out-of-fold"  # or "validation" (a single fold)

    @property
    def model(self) -> str:
        """``forest``, ``HybridViT`` or ``combined``."""
        if self.hybrid_weight == 0.0:
            return "forest"
        return "HybridViT" if self.hybrid_weight == 1.0 else "combined"

    def probabilities(self, hybrid: np.ndarray | None, forest: np.ndarray | None) -> np.ndarray:
        """The chosen model's probabilities from its parts' for the same windows."""
        return mix(hybrid, forest, self.hybrid_weight)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "hybrid_weight": self.hybrid_weight,
            "thresholds": [float(t) for t in self.thresholds],
            "prior_power": self.prior_power,
            "event_log_loss": {f"{w:g}": loss for w, loss in self.event_log_loss.items()},
            "n_events": self.n_events,
            "chosen_on": self.chosen_on,
        }


def mix(hybrid: np.ndarray | None, forest: np.ndarray | None, weight: float) -> np.ndarray:
    """The combination at ``weight``; the part itself at 0 (forest) or 1 (HybridViT)."""
    if weight == 0.0 or hybrid is None:
        return np.asarray(forest, dtype=np.float64)
    if weight == 1.0 or forest is None:
        return np.asarray(hybrid, dtype=np.float64)
    return combine_parts(hybrid, forest, weight)


def event_losses(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The log loss of each event (its stations combined by the deployed rule)."""
    event_probs, event_true, _, _ = combine_by_event(probs, labels, groups)
    return -np.log(event_probs[np.arange(len(event_true)), event_true] + LOG_PROB_EPS)


def per_event_losses(
    validations: Sequence[Validation], weights: Sequence[float]
) -> dict[float, np.ndarray]:
    """Each weight's log loss of every validation event, the validations' events one after
    another."""
    return {
        float(w): np.concatenate(
            [event_losses(mix(v.hybrid, v.forest, w), v.labels, v.groups) for v in validations]
        )
        for w in weights
    }


def class_priors(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Class shares of ``labels``; a class without any gets a small share, not 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(float)
    counts = np.maximum(counts, 0.5)
    return counts / counts.sum()


def choose_weight(
    validations: Sequence[Validation], weights: Sequence[float] = HYBRID_WEIGHTS
) -> tuple[float, dict[float, float], int]:
    """The smallest weight whose event log loss over the pooled validation events is within
    one standard error of the lowest (module doc), every candidate's loss, and the number of
    events scored."""
    usable = [v for v in validations if len(v.labels)]
    candidates = [w for w in weights if _available(usable, w)]
    if not candidates:
        raise ValueError(f"no validation probabilities for any of the weights {list(weights)}")
    if not usable:  # nothing to judge on: the first candidate
        return float(candidates[0]), {}, 0
    per_event = per_event_losses(usable, candidates)
    losses = {w: float(values.mean()) for w, values in per_event.items()}
    best = min(losses, key=losses.get)
    n_events = len(per_event[best])
    error = float(per_event[best].std(ddof=1) / np.sqrt(n_events)) if n_events > 1 else 0.0
    chosen = min(w for w in losses if losses[w] <= losses[best] + error + 1e-12)
    return chosen, losses, n_events


def _available(validations: Sequence[Validation], weight: float) -> bool:
    needs_hybrid, needs_forest = weight > 0.0, weight < 1.0
    return all(
        (v.hybrid is not None or not needs_hybrid) and (v.forest is not None or not needs_forest)
        for v in validations
    )


def calibrate_thresholds(
    probs: Sequence[np.ndarray],
    validations: Sequence[Validation],
    priors: np.ndarray,
    powers: Sequence[float] = PRIOR_POWERS,
) -> tuple[np.ndarray, float]:
    """Thresholds ``priors ** power`` (normalised) for the power the module's rule picks on the
    validation ``probs`` (one array per validation, their rows)."""
    events, event_labels, traces, trace_labels = [], [], [], []
    for p, v in zip(probs, validations, strict=True):
        if not len(v.labels):
            continue
        event_probs, event_true, _, _ = combine_by_event(p, v.labels, v.groups)
        events.append(event_probs)
        event_labels.append(event_true)
        traces.append(p)
        trace_labels.append(v.labels)
    if not events:
        return _thresholds(priors, 0.0), 0.0
    events, event_labels = np.concatenate(events), np.concatenate(event_labels)
    traces, trace_labels = np.concatenate(traces), np.concatenate(trace_labels)

    def scores(power: float) -> tuple[float, float]:
        t = _thresholds(priors, power)
        return (
            balanced_accuracy(event_labels, decide(events, t)),
            balanced_accuracy(trace_labels, decide(traces, t)),
        )

    scored = {float(p): scores(p) for p in powers}
    best = max(event for event, _ in scored.values())
    error = float(np.sqrt(best * (1.0 - best) / len(event_labels)))
    close = [p for p, (event, _) in scored.items() if event >= best - error - 1e-12]
    power = min(close, key=lambda p: (abs(p - 1.0), -scored[p][1]))
    return _thresholds(priors, power), power


def _thresholds(priors: np.ndarray, power: float) -> np.ndarray:
    t = np.asarray(priors, dtype=np.float64) ** power
    return t / t.sum()


def choose(
    scored_on: Sequence[Validation],
    validations: Sequence[Validation],
    priors: np.ndarray,
    weights: Sequence[float] = HYBRID_WEIGHTS,
    calibrate: bool = True,
    chosen_on: str = "out-of-fold",
) -> Decision:
    """The model (among ``weights``) chosen on ``scored_on``, and its thresholds calibrated on
    ``validations`` (the module doc says which predictions each is)."""
    weight, losses, n_events = choose_weight(scored_on, weights)
    usable = [v for v in validations if len(v.labels)]
    if calibrate:
        probs = [mix(v.hybrid, v.forest, weight) for v in usable]
        thresholds, power = calibrate_thresholds(probs, usable, priors)
    else:
        thresholds, power = _thresholds(priors, 0.0), 0.0
    return Decision(weight, thresholds, power, losses, n_events, chosen_on)


@dataclass
class Choices:
    """Each fold's decision for the deployed model and for each part alone, and the decision
    of the model in ``model/`` (the module doc says what each is chosen on)."""

    folds: list[Decision]  # the deployed model, per fold
    hybrid: list[Decision] | None  # the HybridViT alone, its thresholds, per fold
    forest: list[Decision] | None  # the forest alone, its thresholds, per fold
    deployed: Decision  # what model/ holds

    def test_probs(self, outcomes: Sequence, baseline: dict | None) -> list[np.ndarray]:
        """Per fold, the deployed model's test probabilities (each fold's own choice)."""
        return [
            d.probabilities(o.probs, None if baseline is None else baseline["probs"][k])
            for k, (d, o) in enumerate(zip(self.folds, outcomes, strict=True))
        ]


def choose_models(data, folds, outcomes, baseline: dict | None, deploy) -> Choices:
    """The decisions of a run (``deploy``: its ``DeployConfig``), without the test folds."""

    def part(indices: np.ndarray, hybrid, forest) -> Validation:
        return Validation(data.labels[indices], data.source_ids[indices], hybrid, forest)

    no_forest = [None] * len(folds)
    forest_val = no_forest if baseline is None else baseline["val_probs"]
    forest_test = no_forest if baseline is None else baseline["probs"]
    validations, out_of_fold = [], []
    for k, (f, o) in enumerate(zip(folds, outcomes, strict=True)):
        validations.append(part(f.val, o.val_probs, forest_val[k]))
        out_of_fold.append(part(f.test, o.probs, forest_test[k]))
    weights = deploy.candidate_weights(baseline is not None)
    calibrate = deploy.thresholds == "calibrated"
    n = data.n_classes

    def per_fold(candidates: Sequence[float]) -> list[Decision]:
        decisions = []
        for k, f in enumerate(folds):
            priors = class_priors(data.labels[np.concatenate([f.train, f.val])], n)
            if len(folds) > 1:
                others = [p for j, p in enumerate(out_of_fold) if j != k]
                decisions.append(choose(others, [validations[k]], priors, candidates, calibrate))
            else:
                decisions.append(choose(validations, validations, priors, candidates, calibrate,
                                        chosen_on="validation"))  # fmt: skip
        return decisions

    fold_decisions = per_fold(weights)
    if len(folds) > 1:
        deployed = choose(
            out_of_fold, validations, class_priors(data.labels, n), weights, calibrate
        )
    else:  # model/ is the one fold's model: its decision
        deployed = fold_decisions[0]
    return Choices(
        folds=fold_decisions,
        hybrid=per_fold((1.0,)),
        forest=None if baseline is None else per_fold((0.0,)),
        deployed=deployed,
    )
