"""The exported ONNX file carries its class names and preprocessing in ``metadata_props``: read
back with onnx (and with onnxruntime, as a consumer without quake would), they rebuild the
classifier's PreprocessConfig and name the output columns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from quake.data import PreprocessConfig
from quake.deploy.ensemble import EventClassifier
from quake.deploy.export import ONNX_FILE, export_classifier, onnx_predict_proba
from quake.deploy.onnx import ONNX_METADATA_KEYS, read_onnx_metadata
from quake.models import Backbone, HybridViT

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# not the defaults, so that a config read back from defaults would differ
CONFIG = PreprocessConfig(
    window_s=10.24, stft_hop=32, detrend="linear", taper_fraction=0.05, bandpass_hz=(1.0, 20.0)
)
CLASSES = ["earthquake", "quarry blast", "noise"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    member = HybridViT(
        backbone=Backbone.TINY,
        depth=1,
        num_classes=len(CLASSES),
        img_size=CONFIG.spectrogram_shape[1:],
        class_names=CLASSES,
    )
    classifier = EventClassifier([member], CONFIG, CLASSES, model_id="metadata-test")
    out = tmp_path_factory.mktemp("export") / "exported"
    export_classifier(classifier, out, formats=["onnx"])
    return classifier, out / ONNX_FILE


def test_onnx_file_carries_class_names_and_preprocessing(exported):
    classifier, path = exported
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    assert set(ONNX_METADATA_KEYS) <= set(props)
    assert json.loads(props["class_names"]) == CLASSES
    restored = PreprocessConfig.from_dict(json.loads(props["preprocess"]))
    assert restored == classifier.config and restored != PreprocessConfig()
    assert props["model_id"] == "metadata-test"
    assert str(CONFIG.window_samples) in props["input"]
    # the helper reads the same, decoded
    meta = read_onnx_metadata(path)
    assert meta["class_names"] == CLASSES
    assert PreprocessConfig.from_dict(meta["preprocess"]) == classifier.config


def test_onnxruntime_sees_the_metadata_and_the_graph_still_matches(exported):
    classifier, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    custom = session.get_modelmeta().custom_metadata_map
    assert json.loads(custom["class_names"]) == CLASSES
    x = np.random.default_rng(1).normal(size=(4, 3, CONFIG.window_samples)).astype(np.float32)
    np.testing.assert_allclose(onnx_predict_proba(path, x), classifier.predict_proba(x), atol=1e-5)
