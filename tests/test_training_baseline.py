"""Spectral features + random forest: named, finite, scale-free, and able to separate classes."""

from __future__ import annotations

import numpy as np
import pytest

from quake.models.forest import SpectralForestBaseline, feature_names, spectral_features

FS = 100.0


def _signals(n, freq_hz, rng):
    t = np.arange(2048) / FS
    envelope = np.exp(-((t - 8.0) ** 2) / 4.0)
    x = rng.normal(scale=0.2, size=(n, 3, t.size))
    x += envelope * np.sin(2 * np.pi * freq_hz * t)
    return x.astype(np.float32)


def test_features_are_named_finite_and_scale_free():
    rng = np.random.default_rng(0)
    x = _signals(6, 3.0, rng)
    x[0, 1:] = 0.0  # vertical only
    features = spectral_features(x, FS)
    assert features.shape == (6, len(feature_names(FS)))
    assert np.isfinite(features).all()
    np.testing.assert_allclose(spectral_features(x * 1e4, FS), features, rtol=1e-3, atol=1e-3)
    names = feature_names(FS)
    missing = [i for i, n in enumerate(names) if n.startswith(("N_", "E_"))]
    assert np.all(features[0, missing] == 0)  # a missing component gives zero features


def test_forest_separates_low_from_high_frequency_events():
    rng = np.random.default_rng(1)
    x = np.concatenate([_signals(40, 2.0, rng), _signals(40, 15.0, rng)])
    y = np.repeat([0, 1], 40)
    features = spectral_features(x, FS)
    train = np.r_[0:30, 40:70]
    test = np.r_[30:40, 70:80]
    model = SpectralForestBaseline(n_estimators=50, seed=0).fit(features[train], y[train])
    probs = model.predict_proba(features[test], n_classes=3)
    assert probs.shape == (20, 3) and np.allclose(probs[:, 2], 0.0)  # unseen class gets 0
    assert (probs.argmax(axis=1) == y[test]).mean() >= 0.95


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match=r"shape \(N, 3, samples\)"):
        spectral_features(np.zeros((2, 2048)), FS)
    with pytest.raises(ValueError, match="fewer than two spectral bands"):
        feature_names(2.0)
