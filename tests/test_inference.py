"""EventClassifier: the deployable model keeps its preprocessing and survives save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from quake.data import PreprocessConfig, spectrogram_batch
from quake.deploy.ensemble import EventClassifier
from quake.models import HybridViT
from quake.runtime import resolve_device

NAMES = ["earthquake", "explosion", "noise"]
CONFIG = PreprocessConfig(window_s=5.12)  # 512 samples -> (3, 33, 8) spectrograms


def _member(seed: int) -> HybridViT:
    torch.manual_seed(seed)
    return HybridViT(
        depth=1, num_classes=3, img_size=CONFIG.spectrogram_shape[1:], class_names=NAMES
    ).eval()


def _windows(n=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3, CONFIG.window_samples)).astype(np.float32)


def test_probabilities_are_the_member_mean_of_the_same_preprocessing():
    members = [_member(0), _member(1)]
    classifier = EventClassifier(members, CONFIG)
    x = _windows()
    probs = classifier.predict_proba(x, batch_size=2)
    assert probs.shape == (5, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    with torch.inference_mode():
        spec = spectrogram_batch(torch.from_numpy(x), CONFIG)
        by_hand = np.mean([torch.softmax(m(spec), 1).numpy() for m in members], axis=0)
    np.testing.assert_allclose(probs, by_hand, rtol=1e-5, atol=1e-6)
    assert classifier.predict(x) == [NAMES[i] for i in probs.argmax(axis=1)]


def test_save_load_round_trip(tmp_path):
    classifier = EventClassifier(
        [_member(0), _member(1)], CONFIG, model_id="run-abc", info={"run": "r"}
    )
    folder = classifier.save(tmp_path / "run" / "model")
    assert json.loads((folder / "classifier.json").read_text())["preprocess"] == CONFIG.to_dict()
    x = _windows()
    for path in (tmp_path / "run", folder):  # a run folder or the model folder itself
        loaded = EventClassifier.load(path)
        assert loaded.model_id == "run-abc" and loaded.class_names == NAMES
        assert loaded.config == CONFIG and loaded.info == {"run": "r"}
        np.testing.assert_allclose(loaded.predict_proba(x), classifier.predict_proba(x), rtol=1e-6)


def test_weights_changed_after_saving_do_not_load(tmp_path, caplog):
    import shutil

    folder = EventClassifier([_member(0), _member(1)], CONFIG, model_id="run-abc").save(
        tmp_path / "model"
    )
    weights = folder / "members" / "member_1" / "model.safetensors"
    original = weights.read_bytes()
    _member(2).save(tmp_path / "other")  # another model's weights, same architecture
    shutil.copy(tmp_path / "other" / "model.safetensors", weights)
    with pytest.raises(
        ValueError,
        match=r"member_1/model.safetensors' has SHA-256 .* not the .* recorded in classifier.json when model 'run-abc' was saved",
    ):
        EventClassifier.load(folder)
    weights.write_bytes(original[: len(original) // 2])  # truncated
    with pytest.raises(ValueError, match="the file was changed after saving"):
        EventClassifier.load(folder)
    weights.write_bytes(original)
    assert EventClassifier.load(folder).model_id == "run-abc"
    manifest = json.loads((folder / "classifier.json").read_text())
    del manifest["weights_sha256"]  # a folder saved before digests were recorded
    (folder / "classifier.json").write_text(json.dumps(manifest))
    EventClassifier.load(folder)
    assert "records no weight digests" in caplog.text


def test_a_classifier_json_that_is_not_json_is_named(tmp_path):
    folder = EventClassifier([_member(0)], CONFIG).save(tmp_path / "model")
    (folder / "classifier.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"classifier.json' is not valid JSON \(.*line 1"):
        EventClassifier.load(tmp_path)


def test_model_id_follows_the_weights():
    a = EventClassifier([_member(0)], CONFIG)
    b = EventClassifier([_member(0)], CONFIG)
    c = EventClassifier([_member(1)], CONFIG)
    assert a.model_id == b.model_id != c.model_id


def test_wrong_input_is_rejected_with_the_expected_shape():
    classifier = EventClassifier([_member(0)], CONFIG)
    with pytest.raises(ValueError, match=r"expected \(batch, 3, 512\)"):
        classifier.predict_proba(np.zeros((2, 3, 100), np.float32))
    bad = _windows(2)
    bad[0, 0, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        classifier.predict_proba(bad)


def test_inconsistent_members_are_rejected():
    with pytest.raises(ValueError, match="at least one model"):
        EventClassifier([], CONFIG)
    other_input = HybridViT(depth=1, num_classes=3, img_size=(33, 63), class_names=NAMES)
    with pytest.raises(
        ValueError, match=r"takes \(33, 63\) spectrograms; the preprocessing makes \(33, 8\)"
    ):
        EventClassifier([other_input], CONFIG)
    with pytest.raises(ValueError, match="member 0 has 3 outputs; expected 2"):
        EventClassifier([_member(0)], CONFIG, class_names=["earthquake", "explosion"])
    with pytest.raises(
        ValueError, match="member 0 has classes \\['earthquake', 'explosion', 'noise'\\]"
    ):
        EventClassifier([_member(0)], CONFIG, class_names=["noise", "explosion", "earthquake"])


def test_load_from_a_folder_without_a_classifier(tmp_path):
    with pytest.raises(FileNotFoundError, match="no classifier.json"):
        EventClassifier.load(tmp_path)


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
