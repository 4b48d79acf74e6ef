"""The random-forest baseline as a deployable classifier: its trees stored as arrays give
sklearn's probabilities, it saves and loads without pickle, and a run with
``deploy.strategy: baseline`` leaves it in ``model/`` for classification (real eqnoise-3c)."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

import quake
from quake.data import PreprocessConfig
from quake.deploy.forest import BaselineClassifier, forest_arrays, forest_graphs, predict_forest
from quake.models.forest import spectral_features
from quake.training.config import load_config


@pytest.fixture(scope="module")
def eqnoise_features(real_data_dir):
    path = real_data_dir / "eqnoise-3c"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    metadata = pd.read_csv(path / "metadata.csv")
    with h5py.File(path / "waveforms.hdf5", "r") as f:
        windows = np.stack([f["data"][name][:, 300:2348] for name in metadata["trace_name"]])
    labels = (metadata["source_type"] == "noise").to_numpy().astype(int)
    return windows.astype(np.float32), spectral_features(windows, 100.0), labels


@pytest.mark.parametrize("max_depth", [None, 4])
def test_forest_arrays_give_sklearns_probabilities(eqnoise_features, max_depth):
    _, features, labels = eqnoise_features
    order = np.random.default_rng(0).permutation(len(labels))
    fit, test = order[: len(order) // 2], order[len(order) // 2 :]
    forest = RandomForestClassifier(n_estimators=25, max_depth=max_depth, random_state=0)
    forest.fit(features[fit], labels[fit])
    ours = predict_forest(forest_arrays(forest, 2), features[test])
    expected = forest.predict_proba(features[test])
    np.testing.assert_allclose(ours, expected, atol=1e-12)
    assert 0 < expected[:, 1].mean() < 1  # both classes in play


def test_a_class_the_forest_never_saw_gets_zero(eqnoise_features):
    _, features, labels = eqnoise_features
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(features, labels + 1)
    probs = predict_forest(forest_arrays(forest, 3), features[:7])
    assert np.all(probs[:, 0] == 0) and np.allclose(probs.sum(axis=1), 1)


def test_save_load_round_trip_and_tampering(eqnoise_features, tmp_path):
    windows, features, labels = eqnoise_features
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(features, labels)
    config = PreprocessConfig(window_s=20.48)
    classifier = BaselineClassifier([forest_arrays(forest, 2)], config, ["earthquake", "noise"],
                                    model_id="m-rf")  # fmt: skip
    folder = classifier.save(tmp_path / "model")
    loaded = quake.load(folder)
    assert isinstance(loaded, BaselineClassifier) and loaded.model_id == "m-rf"
    np.testing.assert_allclose(
        loaded.predict_proba(windows[:9]), forest.predict_proba(features[:9])
    )
    assert loaded.graphs is None  # saved without ONNX graphs: loads and classifies as before
    with_graphs = BaselineClassifier([forest_arrays(forest, 2)], config, ["earthquake", "noise"],
                                     model_id="m-rf", graphs=forest_graphs([forest]))  # fmt: skip
    again = quake.load(with_graphs.save(tmp_path / "with-graphs"))
    assert again.graphs == with_graphs.graphs and again.graphs[0].classes == (0, 1)
    (tmp_path / "with-graphs" / "forest_0.onnx").write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match=r"forest_0.onnx' has SHA-256 .* changed after saving"):
        quake.load(tmp_path / "with-graphs")
    (folder / "forests.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match=r"forests.safetensors' has SHA-256 .* after saving"):
        quake.load(folder)


@pytest.mark.slow
def test_deploy_baseline_leaves_the_forests_in_model(real_data_dir, pnw, tmp_path):
    import obspy

    from quake.deploy.export import export_classifier, load_exportable

    run = quake.train(data=real_data_dir / "eqnoise-3c", model__depth=1, optim__epochs=1,
                      cv__folds=2, model__pretrained="none", deploy__strategy="baseline",
                      baseline__n_estimators=20, run__out=str(tmp_path / "run"),
                      run__quiet=True)  # fmt: skip
    deployed = quake.load(run)
    assert isinstance(deployed, BaselineClassifier) and len(deployed.forests) == 2
    assert (run / "model_hybridvit" / "classifier.json").is_file()
    stream = obspy.read(str(pnw / "waveforms" / "uw61362132" / "*.mseed"))
    result = deployed.classify(stream, origin_time="2018-04-11T20:55:29.39Z")
    assert result.predicted_class in ("earthquake", "noise")
    export_classifier(load_exportable(run), tmp_path / "forests", formats=["onnx"])
    exported = quake.load(tmp_path / "forests")
    windows = np.random.default_rng(0).normal(size=(4, 3, deployed.config.window_samples))
    np.testing.assert_allclose(exported.predict_proba(windows), deployed.predict_proba(windows))
    export_classifier(load_exportable(run / "model_hybridvit"), tmp_path / "x", formats=["onnx"])
    with pytest.raises(
        ValueError,
        match=r"deploy.strategy='baseline' is invalid; expected 'auto' or 'ensemble' when",
    ):
        load_config(None, {"deploy.strategy": "baseline", "baseline.enabled": False})
