"""Spectral features + random forest: named, finite, scale-free, and able to separate classes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from quake.models.forest import (
    SpectralFeatures,
    SpectralForestBaseline,
    baseline_pipeline,
    feature_names,
    spectral_features,
)
from quake.probabilities import full_class_probabilities

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


def test_a_class_absent_from_training_gets_probability_zero():
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]])
    full = full_class_probabilities(probs, [0, 2], 3)  # class 1 never seen
    np.testing.assert_array_equal(full, [[0.7, 0.0, 0.3], [0.2, 0.0, 0.8], [0.5, 0.0, 0.5]])
    np.testing.assert_allclose(full.sum(axis=1), 1.0)
    assert full_class_probabilities(np.ones((4, 1)), [1], 2).tolist() == [[0.0, 1.0]] * 4
    assert full_class_probabilities(np.zeros((0, 2)), [0, 1], 3).shape == (0, 3)
    with pytest.raises(ValueError, match=r"probs of shape \(3, 2\): expected \(N, 3\)"):
        full_class_probabilities(probs, [0, 1, 2], 3)
    with pytest.raises(ValueError, match=r"seen classes \[0, 3\]: expected distinct .* in 0\.\.2"):
        full_class_probabilities(probs, [0, 3], 3)
    with pytest.raises(ValueError, match=r"seen classes \[1, 1\]: expected distinct"):
        full_class_probabilities(probs, [1, 1], 3)


def test_a_forest_without_a_middle_class_gives_it_zero_and_rows_sum_to_one():
    from quake.deploy.forest import forest_arrays, predict_forest

    rng = np.random.default_rng(2)
    x = np.concatenate([_signals(20, 2.0, rng), _signals(20, 15.0, rng)])
    features = spectral_features(x, FS)
    y = np.repeat([0, 2], 20)  # class 1 absent from training
    model = SpectralForestBaseline(n_estimators=20, seed=0).fit(features, y)
    probs = model.predict_proba(features, n_classes=3)
    assert np.all(probs[:, 1] == 0.0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    deployed = predict_forest(forest_arrays(model.forest, 3), features)
    np.testing.assert_allclose(deployed, probs, atol=1e-12)


def test_the_baseline_is_one_sklearn_pipeline_and_training_fits_its_forest():
    rng = np.random.default_rng(2)
    x = np.concatenate([_signals(30, 2.0, rng), _signals(30, 15.0, rng)])
    y = np.repeat([0, 1], 30)
    pipeline = baseline_pipeline(FS, n_estimators=20, max_depth=5, seed=3)
    params = pipeline.get_params()
    assert params["features__sampling_rate_hz"] == FS
    assert params["forest__class_weight"] == "balanced" and params["forest__random_state"] == 3
    copy = clone(pipeline)
    assert copy is not pipeline and copy.get_params()["forest__max_depth"] == 5
    # training computes the features once and fits the same estimator as the last step
    trained = SpectralForestBaseline(n_estimators=20, max_depth=5, seed=3)
    assert trained.forest.get_params() == pipeline.named_steps["forest"].get_params()
    trained.fit(spectral_features(x[::2], FS), y[::2])
    pipeline.fit(x[::2], y[::2])
    np.testing.assert_array_equal(
        pipeline.predict_proba(x[1::2]),
        trained.forest.predict_proba(spectral_features(x[1::2], FS)),
    )
    features = SpectralFeatures(FS)
    assert features.fit(x).transform(x[:2]).shape == (2, len(feature_names(FS)))
    with pytest.raises(ValueError, match="fewer than two spectral bands"):
        SpectralFeatures(2.0).fit(x)
