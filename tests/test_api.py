"""The Python API on real pnw-eqex recordings: ``clf.classify(stream)`` gives what the command
writes for the same event, ``quake.classify_catalog`` takes an obspy Catalog in memory, an ONNX
export loads with ``quake.load``, and the docstring examples run."""

from __future__ import annotations

import doctest

import numpy as np
import obspy
import pandas as pd
import pytest

import quake
from quake.classify.run import run_classification
from quake.probabilities import prob_column

CLASSES = ["earthquake", "explosion"]
PROBS = [prob_column(c) for c in CLASSES]
EVENT = "uw61362132"


@pytest.fixture(scope="module")
def command_run(pnw, model_dir, tmp_path_factory):
    """What the command writes for the whole catalog (predictions and stations)."""
    out = tmp_path_factory.mktemp("run")
    run_classification(quake.load(model_dir), pnw / "catalog.xml", pnw, out / "predictions.csv",
                       stations_out=out / "stations.csv", progress=False)  # fmt: skip
    read = lambda name: pd.read_csv(out / name, dtype=str, keep_default_na=False)  # noqa: E731
    return {"predictions": read("predictions.csv"), "stations": read("stations.csv")}


def _origin(pnw, event_id: str) -> str:
    catalog = pd.read_csv(pnw / "catalog.csv")
    return catalog.set_index("event_id").loc[event_id, "time"]


def test_classify_a_stream_as_the_command_does(pnw, model_dir, command_run):
    clf = quake.load(model_dir)
    stream = obspy.read(str(pnw / "waveforms" / EVENT / "*.mseed"))
    result = clf.classify(stream, origin_time=_origin(pnw, EVENT))

    row = command_run["predictions"].set_index("event_id").loc[EVENT]
    assert result.predicted_class == row["predicted_class"]
    np.testing.assert_allclose([result.probabilities[c] for c in CLASSES],
                               row[PROBS].astype(float), atol=1e-5)  # fmt: skip
    expected = command_run["stations"]
    expected = expected[expected["event_id"] == EVENT].set_index("station_id")
    got = result.stations.set_index("station_id")
    assert sorted(got.index) == sorted(expected.index)
    for station, mine in got.iterrows():
        theirs = expected.loc[station]
        assert mine["status"] == theirs["status"] and mine["reason"] == theirs["reason"]
        if mine["status"] == "used":
            np.testing.assert_allclose(mine[PROBS].astype(float), theirs[PROBS].astype(float),
                                       atol=1e-5)  # fmt: skip
        else:
            assert result.skipped[station]
    assert int(row["n_stations_used"]) == int((result.stations["status"] == "used").sum())


def test_classify_without_any_usable_station_says_why(model_dir):
    clf = quake.load(model_dir)
    empty = clf.classify(obspy.Stream(), origin_time="2020-01-01T00:00:00")
    assert empty.probabilities is None and empty.predicted_class is None
    assert empty.skipped == {"event": "empty stream"}
    with pytest.raises(ValueError, match="expected an obspy Stream"):
        clf.classify([np.zeros(10)])
    with pytest.raises(ValueError, match=r"got an obspy Stream; expected windows, or classify"):
        clf.predict_proba(obspy.read())  # obspy's example stream


def test_classify_catalog_takes_a_catalog_in_memory(pnw, model_dir, command_run):
    catalog = obspy.read_events(str(pnw / "catalog.xml"))
    comments_before = sum(len(e.comments) for e in catalog)
    table, classified = quake.classify_catalog(catalog, pnw, model=model_dir, quakeml=True)
    expected = command_run["predictions"]
    assert list(table["event_id"]) == list(expected["event_id"])
    np.testing.assert_allclose(table[PROBS].astype(float), expected[PROBS].astype(float),
                               atol=1e-5)  # fmt: skip
    assert sum(len(e.comments) for e in catalog) == comments_before  # the caller's is untouched
    assert all(e.comments and "quake model" in e.comments[-1].text for e in classified)
    assert [e.event_type for e in classified] == [e.event_type for e in catalog]  # types kept


def test_an_onnx_export_loads_and_classifies_alike(pnw, model_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from quake.deploy.export import export_classifier

    torch_clf = quake.load(model_dir)
    export_classifier(torch_clf, tmp_path / "export", formats=["onnx"])
    onnx_clf = quake.load(tmp_path / "export")
    assert list(onnx_clf.class_names) == CLASSES and onnx_clf.model_id == torch_clf.model_id
    stream = obspy.read(str(pnw / "waveforms" / EVENT / "*.mseed"))
    a = torch_clf.classify(stream, origin_time=_origin(pnw, EVENT))
    b = onnx_clf.classify(stream, origin_time=_origin(pnw, EVENT))
    np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()),
                               atol=1e-5)  # fmt: skip


def test_the_docstring_examples_run(pnw, model_dir):
    import quake.api
    import quake.deploy.ensemble

    clf = quake.load(model_dir)
    stream = obspy.read(str(pnw / "waveforms" / EVENT / "*.mseed"))
    globs = {"obspy": obspy, "pnw": pnw, "model_dir": model_dir, "clf": clf, "stream": stream}
    for target in (quake.api, quake.deploy.ensemble.EventClassifier.classify):
        finder = doctest.DocTestFinder()
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        tests = finder.find(target, globs=dict(globs))
        assert sum(len(t.examples) for t in tests) > 0
        for test in tests:
            runner.run(test)
        assert runner.failures == 0, f"{target}: {runner.failures} example(s) failed"


@pytest.mark.slow
def test_train_returns_the_run_folder(real_data_dir, tmp_path):
    run = quake.train(data=real_data_dir / "eqnoise-3c", model__depth=1, optim__epochs=1,
                      cv__folds=2, model__pretrained="none", baseline__enabled=False,
                      run__out=str(tmp_path / "run"), run__quiet=True)  # fmt: skip
    assert run == tmp_path / "run" and (run / "model" / "classifier.json").is_file()
