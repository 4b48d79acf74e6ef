"""Class probabilities: computed from a model, named in tables, combined from stations into
events. Training, classification and export all use these, so a probability means the same
thing in a fold's predictions, a report and a catalog's ``predictions.csv``.

Combination rule: the (optionally weighted) mean of the stations' log-probabilities,
renormalised with a softmax, i.e. the normalised geometric mean of the station distributions:

    p_event(c) ∝ exp( Σ_s w_s · log(p_s(c) + eps) / Σ_s w_s )

Stations of one event are repeated, noisy looks at the same source. The geometric mean lets
every station vote with its confidence (a station that is sure moves the event more than an
arithmetic mean would let it), while dividing by the number of stations keeps an event with 30
stations from becoming absurdly over-confident, as a plain product would. :data:`LOG_PROB_EPS`
bounds one station's veto: a station that gives a class probability 0 cannot make it
impossible. One station gives back its own probabilities (up to eps).

The same rule combines two models' probabilities for one window (:func:`combine_models`: the
HybridViT and the baseline under ``deploy.strategy: combined``, each with its share of the vote).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from quake.data import PreprocessConfig, spectrogram_batch

#: Table columns of class probabilities: ``prob_<class>``, spaces as ``_``.
PROB_PREFIX = "prob_"
#: Added to a probability before its logarithm (event combination, log-loss): bounds a veto.
LOG_PROB_EPS = 1e-6


def prob_column(class_name: str) -> str:
    """``"quarry blast"`` -> ``"prob_quarry_blast"``."""
    return PROB_PREFIX + class_name.replace(" ", "_")


def full_class_probabilities(
    probs: np.ndarray, seen_classes: Sequence[int], n_classes: int
) -> np.ndarray:
    """``(N, n_classes)`` probabilities from the ``(N, len(seen_classes))`` columns of a model
    fitted on some classes only (``seen_classes``: their indices, sklearn's ``classes_``).

    A fold can lack a class (a rare class, a small set), and a model that never saw it must
    still return a column per class, so that its rows line up with every other model's: the
    unseen class gets probability 0 and each row keeps its sum."""
    probs = np.asarray(probs, dtype=np.float64)
    seen = np.asarray(seen_classes, dtype=np.int64)
    if probs.ndim != 2 or probs.shape[1] != len(seen):
        raise ValueError(
            f"probs of shape {probs.shape}: expected (N, {len(seen)}), one column per seen class"
        )
    if len(set(seen.tolist())) != len(seen) or not all(0 <= c < n_classes for c in seen):
        raise ValueError(
            f"seen classes {seen.tolist()}: expected distinct class indices in 0..{n_classes - 1}"
        )
    full = np.zeros((len(probs), n_classes), dtype=np.float64)
    full[:, seen] = probs
    return full


def model_probabilities(
    model: torch.nn.Module,
    waveforms: torch.Tensor,
    config: PreprocessConfig,
    *,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    prepared: bool = False,
) -> np.ndarray:
    """Softmax probabilities ``(B, C)`` of one model for trimmed windows ``(B, 3, n)``, or for
    their model inputs (``spectrogram_batch``'s output) when ``prepared``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(waveforms), batch_size):
            batch = waveforms[start : start + batch_size].to(device, non_blocking=True)
            logits = model(batch if prepared else spectrogram_batch(batch, config))
            out.append(torch.softmax(logits.float(), dim=1).cpu())
    model.train(was_training)
    if not out:
        n_classes = getattr(model, "num_classes", 0)
        return np.zeros((0, n_classes), dtype=np.float64)
    return torch.cat(out).double().numpy()


def combine_groups(
    probs: np.ndarray, groups: np.ndarray, n_groups: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """``(S, C)`` probabilities of stations, ``groups[s]`` in ``0..n_groups-1`` the event of
    station ``s`` -> ``(n_groups, C)`` event probabilities by the rule of this module."""
    probs = np.asarray(probs, dtype=np.float64)
    w = np.ones(len(probs)) if weights is None else np.asarray(weights, dtype=np.float64)
    sums = np.zeros((n_groups, probs.shape[1]))
    np.add.at(sums, groups, w[:, None] * np.log(probs + LOG_PROB_EPS))
    totals = np.bincount(groups, weights=w, minlength=n_groups)
    mean_log = sums / totals[:, None]
    mean_log -= mean_log.max(axis=1, keepdims=True)
    out = np.exp(mean_log)
    return out / out.sum(axis=1, keepdims=True)


def combine_models(
    model_probs: list[np.ndarray], weights: Sequence[float] | None = None
) -> np.ndarray:
    """Several models' ``(N, C)`` probabilities of the same ``N`` windows -> ``(N, C)``: the
    rule of this module, each model voting with its weight (``None``: equal votes; weights
    are relative, so ``[1, 3]`` is ``[0.25, 0.75]``)."""
    shapes = {np.shape(p) for p in model_probs}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(
            f"model_probs must be a non-empty list of (N, C) arrays of one shape, got "
            f"{[np.shape(p) for p in model_probs]}"
        )
    n_models = len(model_probs)
    votes = np.ones(n_models) if weights is None else np.asarray(weights, dtype=np.float64)
    if votes.shape != (n_models,) or not np.all(np.isfinite(votes)) or votes.min() < 0:
        raise ValueError(
            f"weights must be {n_models} finite numbers >= 0, one per model, got {weights!r}"
        )
    if votes.sum() <= 0:
        raise ValueError(f"weights must not all be 0, got {weights!r}")
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in model_probs])
    _, n_windows, n_classes = stacked.shape
    groups = np.tile(np.arange(n_windows), n_models)
    return combine_groups(
        stacked.reshape(-1, n_classes), groups, n_windows, np.repeat(votes, n_windows)
    )


def combine_station_probabilities(
    station_probs: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """(S, C) station probabilities (+ optional (S,) non-negative weights) -> (C,) event
    probabilities."""
    probs = np.asarray(station_probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(
            f"station_probs must have shape (stations>0, classes>0), got {probs.shape}"
        )
    if not np.all(np.isfinite(probs)) or probs.min() < 0:
        raise ValueError("station_probs must be finite and >= 0")
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        if weights.shape[0] != probs.shape[0]:
            raise ValueError(
                f"weights has {weights.shape[0]} entries for {probs.shape[0]} stations"
            )
        if not np.all(np.isfinite(weights)) or weights.min() < 0 or weights.sum() <= 0:
            raise ValueError(
                f"weights must be finite, >= 0 and not all zero, got {weights.tolist()}"
            )
    return combine_groups(probs, np.zeros(len(probs), dtype=np.int64), 1, weights)[0]


def decide(probs: np.ndarray, thresholds: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """The class index of each row of ``(N, C)`` probabilities under per-class decision
    thresholds: the class with the largest ``p_c / t_c`` (``None``: the largest ``p_c``).

    Thresholds are the model's saved operating point (``decision.json``): with ``t`` the
    class priors of training, a calibrated model's decision is balanced between the classes
    rather than drawn to the common one; equal thresholds give the plain argmax."""
    probs = np.asarray(probs, dtype=np.float64)
    if thresholds is None:
        return probs.argmax(axis=-1)
    t = np.asarray(thresholds, dtype=np.float64)
    if t.shape != probs.shape[-1:] or not np.all(np.isfinite(t)) or t.min() <= 0:
        raise ValueError(
            f"decision thresholds {t.tolist()}: expected {probs.shape[-1]} positive numbers, "
            "one per class"
        )
    return (probs / t).argmax(axis=-1)
