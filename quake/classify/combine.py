"""Station probabilities -> one event probability.

Rule: the (optionally weighted) mean of the stations' log-probabilities, renormalised with a
softmax, i.e. the normalised geometric mean of the station distributions:

    p_event(c) ∝ exp( Σ_s w_s · log(p_s(c) + eps) / Σ_s w_s )

Why this rule: stations of one event are repeated, noisy looks at the same source. The geometric
mean lets every station vote with its confidence (a station that is sure moves the event more
than an arithmetic mean would let it), while dividing by the number of stations keeps an event
with 30 stations from becoming absurdly over-confident, as a plain product would. ``eps`` bounds
one station's veto: a station that gives a class probability 0 cannot make it impossible.
One station gives back its own probabilities (up to eps).
"""

from __future__ import annotations

import numpy as np

DEFAULT_EPS = 1e-6


def combine_station_probabilities(
    station_probs: np.ndarray, weights: np.ndarray | None = None, eps: float = DEFAULT_EPS
) -> np.ndarray:
    """(S, C) station probabilities (+ optional (S,) non-negative weights) -> (C,) event probabilities."""
    probs = np.asarray(station_probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(
            f"station_probs must have shape (stations>0, classes>0), got {probs.shape}"
        )
    if not np.all(np.isfinite(probs)) or probs.min() < 0:
        raise ValueError("station_probs must be finite and >= 0")
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if weights is None:
        w = np.ones(probs.shape[0])
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape[0] != probs.shape[0]:
            raise ValueError(f"weights has {w.shape[0]} entries for {probs.shape[0]} stations")
        if not np.all(np.isfinite(w)) or w.min() < 0 or w.sum() <= 0:
            raise ValueError(f"weights must be finite, >= 0 and not all zero, got {w.tolist()}")
    mean_log = (w[:, None] * np.log(probs + eps)).sum(axis=0) / w.sum()
    mean_log -= mean_log.max()
    out = np.exp(mean_log)
    return out / out.sum()
