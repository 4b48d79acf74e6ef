"""The SeisBench adapter: a quake classifier used as a ``seisbench.models.WaveformModel``."""

from __future__ import annotations

import numpy as np
import obspy
import pytest
import torch

import quake

pytest.importorskip("seisbench.models")
from quake.deploy.seisbench import QuakeClassifier  # noqa: E402

EVENT, ORIGIN = "uw61362132", "2018-04-11T20:55:29.39Z"


def test_classify_gives_what_quake_gives(model_dir, pnw):
    import seisbench.models as sbm
    import seisbench.util as sbu

    model = QuakeClassifier.from_quake(model_dir)
    clf = quake.load(model_dir)
    assert isinstance(model, sbm.WaveformModel)
    assert model.component_order == "ZNE" and model.labels == ["earthquake", "explosion"]
    assert model.sampling_rate == clf.config.sampling_rate_hz
    assert model.in_samples == clf.config.window_samples
    stream = obspy.read(str(pnw / "waveforms" / EVENT / "*.mseed"))
    out = model.classify(stream, origin_time=ORIGIN)
    expected = clf.classify(stream, origin_time=ORIGIN)
    assert isinstance(out, sbu.ClassifyOutput) and out.creator == "QuakeClassifier"
    assert out.probabilities == pytest.approx(expected.probabilities)
    assert out.predicted_class == expected.predicted_class
    assert out.stations["station_id"].tolist() == expected.stations["station_id"].tolist()
    assert out.model_id == clf.model_id


def test_forward_is_predict_proba_and_arguments_are_checked(model_dir):
    model = QuakeClassifier.from_quake(model_dir)
    windows = np.random.default_rng(0).normal(size=(4, 3, model.in_samples)).astype(np.float32)
    probs = model(torch.from_numpy(windows))
    np.testing.assert_allclose(probs.numpy(), model.classifier.predict_proba(windows), rtol=1e-6)
    np.testing.assert_allclose(probs.sum(dim=1).numpy(), 1.0, rtol=1e-5)
    with pytest.raises(TypeError, match=r"unexpected arguments \['overlap'\]"):
        model.annotate(obspy.Stream(), overlap=1000)
    with pytest.raises(TypeError, match=r"unexpected arguments \['batch_size'\]"):
        model.classify(obspy.Stream(), batch_size=8)
    with pytest.raises(TypeError, match="expected a quake classifier"):
        QuakeClassifier(object())


def test_annotate_gives_what_quake_gives(model_dir, pnw):
    """``annotate`` is the classifier's own: the same probability Stream, SeisBench's convention."""
    model = QuakeClassifier.from_quake(model_dir)
    clf = quake.load(model_dir)
    stream = obspy.read(str(pnw / "waveforms" / EVENT / "*.HHZ.mseed"))
    before = stream.copy()
    out = model.annotate(stream, stride=2.56)
    expected = clf.annotate(stream, stride=2.56)
    assert isinstance(out, obspy.Stream) and len(out) == len(expected) > 0
    assert {tr.stats.channel for tr in out} == {"quake_earthquake", "quake_explosion"}
    for got, want in zip(out, expected, strict=True):
        assert got.id == want.id and got.stats.starttime == want.stats.starttime
        assert got.stats.sampling_rate == pytest.approx(1 / 2.56)
        np.testing.assert_allclose(got.data, want.data, rtol=1e-6)
    assert stream == before  # the input is not changed
