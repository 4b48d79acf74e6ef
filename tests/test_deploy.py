"""One protocol and one ``load`` for every deployable kind, on a real trained run (pnw-eqex,
the HybridViT ensemble and the forests combined: ``deploy.strategy: combined``).

The same events must get the same probabilities through ``quake.load``, the ``quake classify``
command and the SeisBench adapter; every saved format loads through the one table of formats;
a damaged manifest is an error naming the file, never a fallback to one of the parts."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import obspy
import pandas as pd
import pytest

import quake
from quake.classify.tables import read_predictions
from quake.deploy import (
    KINDS,
    BaselineClassifier,
    Classifier,
    CombinedClassifier,
    EventClassifier,
    OnnxClassifier,
)
from quake.deploy.card import events_digest
from quake.deploy.manifest import CLASSIFIER_FILE
from quake.probabilities import prob_column

EVENTS = 6  # events of pnw-eqex classified through each path


@pytest.fixture(scope="module")
def run(pnw_run):
    """A tiny run on pnw-eqex deploying the combined model (conftest's ``pnw_run``)."""
    return pnw_run


@pytest.fixture(scope="module")
def catalog(pnw, tmp_path_factory):
    """The first events of pnw-eqex's catalog, as a QuakeML file."""
    events = obspy.read_events(str(pnw / "catalog.xml"))
    path = tmp_path_factory.mktemp("catalog") / "catalog.xml"
    obspy.Catalog(events[:EVENTS]).write(str(path), format="QUAKEML")
    return path


def windows(classifier: Classifier, pnw, n: int = 8) -> np.ndarray:
    """Real trimmed windows of pnw-eqex, as classification cuts them."""
    from quake.data import WaveformDataAdapter, open_dataset

    adapter = WaveformDataAdapter(open_dataset(pnw, classifier.config), config=classifier.config)
    return np.stack([adapter.get_waveform(i) for i in range(n)])


def test_a_combined_run_deploys_the_combination_with_the_protocol(run):
    clf = quake.load(run)
    assert isinstance(clf, CombinedClassifier) and isinstance(clf, Classifier)
    assert quake.load(run / "model").model_id == clf.model_id
    assert clf.preprocess is clf.config
    assert set(KINDS.values()) == {
        EventClassifier,
        BaselineClassifier,
        CombinedClassifier,
        OnnxClassifier,
    }


def test_load_the_command_and_the_seisbench_adapter_agree(run, pnw, catalog, tmp_path):
    from quake.deploy.seisbench import QuakeClassifier

    clf = quake.load(run)
    names = list(clf.class_names)
    columns = [prob_column(c) for c in names]
    api = clf.classify_catalog(catalog, pnw).set_index("event_id")

    out = tmp_path / "predictions.csv"
    command = [sys.executable, "-m", "quake", "classify", "--model", str(run), "--catalog",
               str(catalog), "--waveforms", str(pnw), "--out", str(out), "--no-progress"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    cli = read_predictions(out).set_index("event_id")
    assert list(cli.index) == list(api.index) and len(api) == EVENTS
    assert (cli["model_id"] == clf.model_id).all()
    np.testing.assert_allclose(
        cli[columns].astype(float).to_numpy(), api[columns].astype(float).to_numpy(), atol=1e-5
    )

    adapter = QuakeClassifier(clf)
    for event, event_id in zip(obspy.read_events(str(catalog)), api.index, strict=True):
        stream = obspy.read(str(pnw / "waveforms" / event_id / "*.mseed"))
        result = adapter.classify(stream, origin_time=event.origins[0].time)
        got = [result.probabilities[c] for c in names]
        np.testing.assert_allclose(got, api.loc[event_id, columns].astype(float), atol=1e-5)


def test_the_saved_thresholds_decide_in_classify_and_predict(run, pnw, catalog, tmp_path):
    """``model/decision.json`` holds the thresholds the run chose; the catalog job, classify
    (stream) and predict decide with them: thresholds that favour one class move every event
    to it, and the table's class is the largest probability / threshold."""
    metrics = json.loads((run / "metrics.json").read_text())
    clf = quake.load(run)
    np.testing.assert_allclose(clf.decision_thresholds, metrics["deployed_decision"]["thresholds"])
    saved = json.loads((run / "model" / "decision.json").read_text())["thresholds"]
    assert list(saved) == list(clf.class_names)
    names = list(clf.class_names)
    columns = [prob_column(c) for c in names]

    def decided(table: pd.DataFrame, thresholds) -> list[str]:
        probs = table[columns].astype(float).to_numpy()
        return [names[k] for k in (probs / np.asarray(thresholds)).argmax(axis=1)]

    table = clf.classify_catalog(catalog, pnw)
    assert table["predicted_class"].tolist() == decided(table, clf.decision_thresholds)

    model = tmp_path / "explosion-leaning"
    clf.decision_thresholds = np.array([0.999 if c == "earthquake" else 0.001 for c in names])
    clf.save(model)
    leaning = quake.load(model)
    table = leaning.classify_catalog(catalog, pnw)
    assert set(table["predicted_class"]) == {"explosion"}
    stream = obspy.read(str(pnw / "waveforms" / table["event_id"].iloc[0] / "*.mseed"))
    event = obspy.read_events(str(catalog))[0]
    assert leaning.classify(stream, origin_time=event.origins[0].time).predicted_class == (
        "explosion"
    )
    assert set(leaning.predict(windows(leaning, pnw, 4))) == {"explosion"}
    (model / "decision.json").write_text(json.dumps({"thresholds": {"earthquake": 1.0}}))
    with pytest.raises(ValueError, match=r"decision.json' has thresholds for \['earthquake'\]"):
        quake.load(model)


def test_every_saved_kind_loads_through_the_one_load(run, pnw, tmp_path):
    combined = quake.load(run)
    x = windows(combined, pnw)
    parts = {
        "combined": combined,
        "ensemble": combined.hybrid,
        "forest": combined.baseline,
    }
    for name, clf in parts.items():
        loaded = quake.load(clf.save(tmp_path / name))
        assert type(loaded) is type(clf) and loaded.model_id == clf.model_id
        np.testing.assert_allclose(loaded.predict_proba(x), clf.predict_proba(x), atol=1e-6)


def test_an_onnx_export_loads_with_the_same_protocol(run, pnw, tmp_path):
    from quake.deploy.export import export_classifier

    hybrid = quake.load(run).hybrid
    export_classifier(hybrid, tmp_path / "export", formats=["onnx"])
    loaded = quake.load(tmp_path / "export")
    assert isinstance(loaded, OnnxClassifier) and loaded.model_id == hybrid.model_id
    x = windows(hybrid, pnw)
    np.testing.assert_allclose(loaded.predict_proba(x), hybrid.predict_proba(x), atol=1e-5)
    copy = quake.load(loaded.save(tmp_path / "copy"))
    np.testing.assert_allclose(copy.predict_proba(x), loaded.predict_proba(x), atol=0)


def test_a_damaged_top_level_manifest_is_named_not_replaced_by_a_part(run, tmp_path):
    import shutil

    folder = shutil.copytree(run / "model", tmp_path / "model")
    manifest = folder / CLASSIFIER_FILE
    manifest.write_text(manifest.read_text()[:40])  # cut short
    with pytest.raises(ValueError, match=r"classifier\.json.* is not valid JSON"):
        quake.load(folder)


def test_an_unknown_format_names_the_known_ones(run, tmp_path):
    import shutil

    folder = shutil.copytree(run / "model", tmp_path / "model")
    manifest = folder / CLASSIFIER_FILE
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "format": "quake.Unknown"}))
    with pytest.raises(ValueError, match=r"names format 'quake.Unknown'; expected one of"):
        quake.load(folder)


def test_windows_beyond_float32_are_refused_before_the_models(run):
    clf = quake.load(run)
    x = np.zeros((1, 3, clf.window_samples))
    x[0, 0, 5] = 1e300  # finite as float64, inf as float32
    with pytest.raises(ValueError, match="NaN or inf values"):
        clf.predict_proba(x)
    assert pd.api.types.is_float_dtype(np.asarray(clf.predict_proba(x * 0)).dtype)


@pytest.mark.parametrize("key", ["class_names", "preprocess"])
def test_a_top_level_manifest_that_misstates_its_parts_is_refused(run, tmp_path, key):
    import shutil

    folder = shutil.copytree(run / "model", tmp_path / "model")
    manifest = folder / CLASSIFIER_FILE
    data = json.loads(manifest.read_text())
    if key == "class_names":
        data[key] = list(reversed(data[key]))
    else:
        data[key] = {**data[key], "sampling_rate_hz": 50.0}
    manifest.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"classifier\.json.* disagree on {key}"):
        quake.load(folder)


def test_preprocessing_edited_in_every_manifest_is_named_not_an_index_error(run, tmp_path):
    import shutil

    folder = shutil.copytree(run / "model", tmp_path / "model")
    for manifest in folder.rglob(CLASSIFIER_FILE):
        data = json.loads(manifest.read_text())
        data["preprocess"] = {**data["preprocess"], "sampling_rate_hz": 20.0}
        manifest.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"hybridvit/classifier\.json': member 0 takes"):
        quake.load(folder)
    with pytest.raises(
        ValueError, match=r"baseline/classifier\.json.* gives \d+ spectral features"
    ):
        BaselineClassifier.load(folder / "baseline")


def test_an_export_cut_short_is_named_when_it_loads(run, tmp_path):
    from quake.deploy.export import export_classifier
    from quake.deploy.onnx import ONNX_FILE

    export_classifier(quake.load(run), tmp_path / "export")
    graph = tmp_path / "export" / ONNX_FILE
    graph.write_bytes(graph.read_bytes()[:1000])
    with pytest.raises(
        ValueError,
        match=r"model\.onnx' has SHA-256 .* recorded in export\.json .* changed after saving",
    ):
        quake.load(tmp_path / "export")


def test_the_deployed_model_carries_its_card(run, tmp_path):
    items = pd.read_csv(run / "items.csv")
    metrics = json.loads((run / "metrics.json").read_text())
    clf = quake.load(run)
    card = clf.card
    assert (run / "model" / "card.json").is_file() and card is not None
    assert card["training_events"] == sorted(set(items["source_id"].astype(str)))
    assert card["training_events_sha256"] == events_digest(items["source_id"].astype(str))
    assert card["classes"] == items["true_class"].value_counts().to_dict()
    assert sum(card["sampling_rates_hz"].values()) == len(items)
    assert card["window"]["length_s"] == clf.preprocess.window_s
    # pnw-eqex has no P picks: every training window started at its origin time
    assert card["window"]["anchored_at"] == {"origin_time": len(items)}
    folds = [f["macro_f1"] for f in metrics["folds"]]
    figure = card["cross_validated"]["trace_macro_f1"]
    assert card["cross_validated"]["model"] == "combined"
    assert figure["worst_fold"] == pytest.approx(min(folds))
    assert figure["mean"] == pytest.approx(metrics["aggregate"]["macro_f1"]["mean"])
    assert quake.load(clf.save(tmp_path / "copy")).card == card
    from quake.deploy.export import export_classifier

    export_classifier(clf, tmp_path / "export")
    assert quake.load(tmp_path / "export").card == card
