"""A window longer than the default is described stretch by stretch: the forest's features are
those of each stretch side by side, in training, in the saved forest and in its ONNX export
(real esec-surface recordings, whose signals outlast the default window)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_run import tiny_run_config

import quake
from quake.data import PreprocessConfig, WaveformDataAdapter, open_dataset
from quake.deploy.export import export_classifier
from quake.deploy.forest import BaselineClassifier, forest_arrays, forest_graphs
from quake.deploy.onnx import read_export
from quake.models.forest import (
    feature_names,
    feature_segments,
    forest_estimator,
    spectral_features,
)
from quake.training import train

RATE_HZ = 50.0
WINDOW_S = 40.96  # two stretches of the default 20.48 s


@pytest.fixture(scope="module")
def surface_windows(real_data_dir):
    """esec-surface windows of 40.96 s from 2 s before the catalogue time, and their classes."""
    path = real_data_dir / "esec-surface"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    config = PreprocessConfig(sampling_rate_hz=RATE_HZ, window_s=WINDOW_S)
    adapter = WaveformDataAdapter(open_dataset(path, config), config=config)
    windows = np.asarray(adapter.load_waveforms(progress=False))
    classes = sorted(set(adapter.metadata["source_type"]))
    labels = np.array([classes.index(t) for t in adapter.metadata["source_type"]])
    return config, windows, labels, classes


def test_segments_follow_the_default_window_length():
    assert feature_segments(20.48) == 1
    assert feature_segments(30.0) == 1  # under 1.5 default windows: one stretch
    assert feature_segments(40.96) == 2
    assert feature_segments(128.0) == 6  # the covering window on esec-surface: 21.3 s each


def test_stretch_features_are_each_stretchs_own_side_by_side(surface_windows):
    config, windows, _, _ = surface_windows
    windows = windows[:40]
    half = config.window_samples // 2
    segmented = spectral_features(windows, RATE_HZ, segments=2)
    first = spectral_features(windows[:, :, :half], RATE_HZ)
    second = spectral_features(windows[:, :, half : 2 * half], RATE_HZ)
    np.testing.assert_array_equal(segmented, np.concatenate([first, second], axis=1))
    assert not np.allclose(first, second)  # the signal changes between the stretches
    names = feature_names(RATE_HZ, 2)
    assert len(names) == segmented.shape[1] == 2 * len(feature_names(RATE_HZ))
    assert names[0].startswith("s0_Z_band") and names[-1] == "s1_horizontal_to_vertical"
    with pytest.raises(ValueError, match="segments must be an integer >= 1, got 0"):
        spectral_features(windows, RATE_HZ, segments=0)
    with pytest.raises(ValueError, match="leave 8 samples each; expected at least 16"):
        spectral_features(windows[:, :, :64], RATE_HZ, segments=8)


def test_long_window_forest_saves_loads_and_exports_alike(surface_windows, tmp_path):
    """The saved forest computes the stretches its preprocessing names, gives sklearn's
    probabilities, and its ONNX export records them and gives the same probabilities."""
    config, windows, labels, classes = surface_windows
    features = spectral_features(windows, RATE_HZ, segments=feature_segments(config.window_s))
    fit, test = np.arange(len(labels)) % 2 == 0, np.arange(len(labels)) % 2 == 1
    forest = forest_estimator(n_estimators=30, seed=0).fit(features[fit], labels[fit])
    classifier = BaselineClassifier(
        [forest_arrays(forest, len(classes))],
        config,
        classes,
        model_id="long-rf",
        graphs=forest_graphs([forest]),
    )
    expected = forest.predict_proba(features[test])
    np.testing.assert_allclose(classifier.predict_proba(windows[test]), expected, atol=1e-12)
    loaded = quake.load(classifier.save(tmp_path / "model"))
    np.testing.assert_allclose(loaded.predict_proba(windows[test]), expected, atol=1e-12)
    export_classifier(loaded, tmp_path / "export", formats=["onnx"])
    assert read_export(tmp_path / "export")["features"]["segments"] == 2
    exported = quake.load(tmp_path / "export")
    np.testing.assert_allclose(exported.predict_proba(windows[test]), expected, atol=1e-5)


def test_forest_of_other_stretches_is_refused_by_name(surface_windows, tmp_path):
    """A forest trained on one stretch, saved with a preprocessing whose window has two, would
    read the wrong columns: loading it names the window length."""
    config, windows, labels, classes = surface_windows
    short = PreprocessConfig(sampling_rate_hz=RATE_HZ, window_s=20.48)
    features = spectral_features(windows[:, :, : short.window_samples], RATE_HZ)
    forest = forest_estimator(n_estimators=5, seed=0).fit(features, labels)
    folder = BaselineClassifier(
        [forest_arrays(forest, len(classes))], short, classes, model_id="short-rf"
    ).save(tmp_path / "model")
    manifest = folder / "classifier.json"
    manifest.write_text(
        manifest.read_text().replace('"window_s": 20.48', f'"window_s": {WINDOW_S}')
    )
    with pytest.raises(ValueError, match=r"40.96 s windows\) gives \d+ spectral features"):
        quake.load(folder)


@pytest.mark.slow
def test_a_long_window_run_trains_and_deploys_forests_of_stretches(real_data_dir, tmp_path):
    """A run with the window the report proposes for surface events (128 s at 32 Hz): its
    forests read six stretches of 21.3 s, metrics.json's feature list and the report name them,
    and the deployed forests compute them from the saved preprocessing."""
    path = real_data_dir / "esec-surface"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    long = {"data.preprocess.window_s": 128.0, "data.preprocess.sampling_rate_hz": 32.0,
            "data.preprocess.stft_nperseg": 64, "data.preprocess.stft_hop": 64,
            "deploy.strategy": "baseline"}  # fmt: skip
    run = train(tiny_run_config(path, tmp_path / "run", **long)).run_dir
    names = json.loads((run / "metrics.json").read_text())["baseline"]["features"]
    per_stretch = feature_names(32.0)
    assert names == [f"s{k}_{name}" for k in range(6) for name in per_stretch]
    report = (run / "report.md").read_text()
    assert f"({len(names)} features: 6 stretches of the window, {len(per_stretch)} each)" in report
    forest = quake.load(run / "model")
    assert isinstance(forest, BaselineClassifier) and forest.segments == 6
    assert forest.config.window_s == 128.0
