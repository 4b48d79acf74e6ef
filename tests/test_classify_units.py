"""Batch classification parts that need no real data: station combination, event ids, catalog
round trips, source choice and argument validation."""

from __future__ import annotations

import numpy as np
import obspy
import pandas as pd
import pytest
from obspy.core.event import Catalog, Event, Origin, ResourceIdentifier

from quake.classify import (
    classify_events,
    combine_station_probabilities,
    open_source,
    prob_column,
    read_catalog,
    read_catalog_with_events,
)
from quake.classify.catalog import annotate_catalog, quakeml_event_id, write_quakeml
from quake.data import catalog as data_catalog
from quake.data.catalog import utc_or_none
from quake.data.sources import EventFolderSource, SDSSource, detect_source_kind


# --- combine ----------------------------------------------------------------------------------
def test_one_station_gives_back_its_probabilities():
    p = np.array([[0.7, 0.2, 0.1]])
    np.testing.assert_allclose(combine_station_probabilities(p), p[0], atol=1e-5)


def test_combination_is_the_normalised_geometric_mean():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=6)
    expected = np.exp(np.log(p + 1e-6).mean(axis=0))
    expected /= expected.sum()
    got = combine_station_probabilities(p)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    np.testing.assert_allclose(combine_station_probabilities(p[::-1]), got, rtol=1e-12)
    assert got.sum() == pytest.approx(1.0)


def test_two_models_combine_per_window_by_the_same_rule():
    from quake.probabilities import combine_models

    rng = np.random.default_rng(1)
    hybrid, forest = rng.dirichlet(np.ones(3), size=5), rng.dirichlet(np.ones(3), size=5)
    got = combine_models([hybrid, forest])
    for w in range(5):
        expected = np.sqrt((hybrid[w] + 1e-6) * (forest[w] + 1e-6))
        np.testing.assert_allclose(got[w], expected / expected.sum(), rtol=1e-10)
    np.testing.assert_allclose(combine_models([forest, hybrid]), got, rtol=1e-12)
    np.testing.assert_allclose(combine_models([hybrid]), hybrid, atol=1e-5)
    with pytest.raises(ValueError, match="non-empty list of"):
        combine_models([hybrid, forest[:3]])


def test_weighted_models_vote_by_their_share():
    from quake.probabilities import combine_models

    rng = np.random.default_rng(2)
    hybrid, forest = rng.dirichlet(np.ones(3), size=4), rng.dirichlet(np.ones(3), size=4)
    got = combine_models([hybrid, forest], [0.25, 0.75])
    expected = (hybrid + 1e-6) ** 0.25 * (forest + 1e-6) ** 0.75
    np.testing.assert_allclose(got, expected / expected.sum(axis=1, keepdims=True), rtol=1e-10)
    np.testing.assert_allclose(combine_models([hybrid, forest], [1, 3]), got, rtol=1e-12)
    np.testing.assert_allclose(combine_models([hybrid, forest], [1, 0]), hybrid, atol=1e-5)
    np.testing.assert_allclose(combine_models([hybrid, forest], [0, 1]), forest, atol=1e-5)
    np.testing.assert_allclose(
        combine_models([hybrid, forest], [0.5, 0.5]), combine_models([hybrid, forest]), rtol=1e-12
    )
    for bad in ([0.5], [-0.1, 1.1], [0, 0], [np.nan, 1]):
        with pytest.raises(ValueError, match="weights must"):
            combine_models([hybrid, forest], bad)


def test_agreeing_stations_sharpen_and_one_zero_is_no_veto():
    agree = np.array([[0.8, 0.2]] * 2 + [[0.6, 0.4]])
    assert combine_station_probabilities(agree)[0] > 0.6
    veto = np.array([[0.9, 0.1], [0.9, 0.1], [0.0, 1.0]])
    assert 0.0 < combine_station_probabilities(veto)[0] < 0.9


def test_weights_move_the_event_towards_the_heavier_station():
    p = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert combine_station_probabilities(p, weights=np.array([3.0, 1.0]))[0] > 0.5
    assert combine_station_probabilities(p, weights=np.array([1.0, 3.0]))[0] < 0.5
    np.testing.assert_allclose(
        combine_station_probabilities(p, weights=np.array([1.0, 0.0])), p[0], atol=1e-5
    )


@pytest.mark.parametrize(
    ("probs", "weights", "match"),
    [
        (np.zeros((0, 2)), None, "shape"),
        (np.array([0.5, 0.5]), None, "shape"),
        (np.array([[np.nan, 1.0]]), None, "finite"),
        (np.array([[-0.1, 1.1]]), None, ">= 0"),
        (np.array([[0.5, 0.5]]), np.array([1.0, 2.0]), "2 entries for 1 stations"),
        (np.array([[0.5, 0.5]]), np.array([0.0]), "not all zero"),
    ],
)
def test_combination_rejects_bad_input(probs, weights, match):
    with pytest.raises(ValueError, match=match):
        combine_station_probabilities(probs, weights)


# --- catalogs and event ids -------------------------------------------------------------------
def _event(
    resource_id: str, mode: str | None = None, status: str | None = None, etype: str | None = None
):
    event = Event(resource_id=ResourceIdentifier(resource_id), event_type=etype)
    origin = Origin(
        time=obspy.UTCDateTime(2020, 1, 1), latitude=45.0, longitude=-122.0, depth=5000.0
    )
    origin.evaluation_mode, origin.evaluation_status = mode, status
    event.origins.append(origin)
    event.preferred_origin_id = origin.resource_id
    return event


def test_event_id_rules_on_quakeml():
    event = _event("smi:uw.anss.org/event/uw61348817")
    assert quakeml_event_id(event) == "uw61348817"
    assert quakeml_event_id(event, "last-segment") == "uw61348817"
    assert quakeml_event_id(event, "resource-id") == "smi:uw.anss.org/event/uw61348817"
    assert quakeml_event_id(event, r"regex:uw(\d+)") == "61348817"
    assert quakeml_event_id(event, r"regex:event/\w+") == "event/uw61348817"
    with pytest.raises(ValueError, match="does not match"):
        quakeml_event_id(event, r"regex:^nc\d+")
    with pytest.raises(ValueError, match="applies to CSV catalogs"):
        quakeml_event_id(event, "column:evid")
    with pytest.raises(ValueError, match="unknown id rule 'bogus'"):
        quakeml_event_id(event, "bogus")
    with pytest.raises(ValueError, match="invalid regular expression"):
        quakeml_event_id(event, "regex:(")


def test_reviewed_events_are_found_and_kept(tmp_path):
    catalog = Catalog(
        events=[
            _event("smi:x/event/a", mode="manual", etype="earthquake"),
            _event("smi:x/event/b", status="final", etype="earthquake"),
            _event("smi:x/event/c", mode="automatic", status="preliminary", etype="earthquake"),
            _event("smi:x/event/d"),
        ]
    )
    path = tmp_path / "catalog.xml"
    catalog.write(str(path), format="QUAKEML")
    events, loaded = read_catalog_with_events(path)
    assert list(events["event_id"]) == ["a", "b", "c", "d"]
    assert list(events["reviewed"]) == [True, True, False, False]
    predictions = pd.DataFrame(
        {
            "event_id": ["a", "b", "c", "d"],
            "predicted_class": ["explosion", "explosion", "noise", ""],
            prob_column("explosion"): ["0.9", "0.8", "0.1", ""],
            prob_column("noise"): ["0.1", "0.2", "0.9", ""],
            "n_stations_used": ["2", "1", "3", "0"],
            "n_stations_skipped": ["0", "0", "1", "2"],
            "skip_reasons": ["", "", "X.Y.: too short", "no waveform folder"],
        }
    )
    classes = ["explosion", "noise"]
    counts = annotate_catalog(loaded, list(events["event_id"]), predictions, classes,
                              [prob_column(c) for c in classes], "m1",
                              overwrite_types=True)  # fmt: skip
    assert counts == {"set": 1, "replaced": 1, "kept_typed": 0, "kept_reviewed": 2,
                      "for_review": 0,
                      "unclassified": 1, "missing": 0}  # fmt: skip
    out = tmp_path / "out.xml"
    write_quakeml(loaded, out)
    back = obspy.read_events(str(out))
    assert [e.event_type for e in back] == ["earthquake", "earthquake", "not existing", None]
    assert [e.event_type_certainty for e in back] == [None, None, "suspected", None]
    assert "noise=0.9000" in back[2].comments[0].text and "m1" in back[2].comments[0].text
    assert back[2].comments[0].text.endswith("; previous type: earthquake")
    assert "no waveform folder" in back[3].comments[0].text
    assert not list(tmp_path.glob(".out.xml.tmp*"))


def test_csv_catalog_columns_id_rules_and_obspy_events(tmp_path):
    path = tmp_path / "catalog.csv"
    pd.DataFrame(
        {
            "evid": ["ev-1", "ev-2", "ev-3"],
            "event_id": ["a", "b", "c"],
            "time": ["2021-01-01T00:00:00Z", "2021-01-02T00:00:00Z", ""],
            "latitude": [45.0, 46.0, None],
            "longitude": [-122.0, -121.0, None],
            "depth_km": [5.0, 0.1, None],
            "magnitude": [2.0, 1.0, None],
            "event_type": ["earthquake", "quarry blast", ""],
            "evaluation_mode": ["manual", "automatic", ""],
            "evaluation_status": ["", "reviewed", ""],
        }
    ).to_csv(path, index=False)
    events, catalog = read_catalog_with_events(path)
    assert list(events["event_id"]) == ["a", "b", "c"]
    assert list(events["reviewed"]) == [True, True, False]
    assert events["origin_time"][2] is None and events["origin_time"][0] == obspy.UTCDateTime(
        2021, 1, 1
    )
    assert list(read_catalog(path, "column:evid")["event_id"]) == ["ev-1", "ev-2", "ev-3"]
    assert list(read_catalog(path, r"regex:[a-z]")["event_id"]) == ["a", "b", "c"]
    assert [e.event_type for e in catalog] == ["earthquake", "quarry blast", None]
    assert catalog[0].preferred_origin().depth == pytest.approx(5000.0)
    assert catalog[2].origins == []
    out = tmp_path / "out.xml"
    write_quakeml(catalog, out)
    assert list(read_catalog(out)["event_id"]) == ["a", "b", "c"]  # ids survive the round trip
    with pytest.raises(ValueError, match="no column 'nope'"):
        read_catalog(path, "column:nope")
    with pytest.raises(ValueError, match="applies to QuakeML"):
        read_catalog(path, "resource-id")


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"event_id": ["a", "a"], "time": ["2021-01-01", "2021-01-02"]}, "not unique"),
        ({"event_id": ["a", ""], "time": ["2021-01-01", "2021-01-02"]}, "empty event id"),
        ({"event_id": ["a"], "when": ["2021-01-01"]}, "no origin time column"),
    ],
)
def test_bad_csv_catalogs_are_rejected(tmp_path, table, match):
    path = tmp_path / "catalog.csv"
    pd.DataFrame(table).to_csv(path, index=False)
    with pytest.raises(ValueError, match=match):
        read_catalog(path)


def test_unknown_catalog_format_and_missing_file(tmp_path):
    (tmp_path / "catalog.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown format '.txt'"):
        read_catalog(tmp_path / "catalog.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_catalog(tmp_path / "nope.csv")


# --- sources ----------------------------------------------------------------------------------
def test_source_kind_is_detected(tmp_path):
    (tmp_path / "sb").mkdir()
    (tmp_path / "sb" / "metadata.csv").write_text("trace_name\n")
    (tmp_path / "sb" / "waveforms.hdf5").write_bytes(b"")
    (tmp_path / "sds" / "2021" / "UW").mkdir(parents=True)
    (tmp_path / "folders" / "waveforms" / "ev1").mkdir(parents=True)
    assert detect_source_kind(str(tmp_path / "sb")) == "seisbench"
    assert detect_source_kind(str(tmp_path / "sds")) == "sds"
    assert detect_source_kind(str(tmp_path / "folders")) == "folders"
    assert detect_source_kind("https://service.iris.edu") == "fdsn"
    assert isinstance(open_source(str(tmp_path / "sds")), SDSSource)
    source = open_source(str(tmp_path / "folders"))
    assert (
        isinstance(source, EventFolderSource) and source.root == tmp_path / "folders" / "waveforms"
    )
    with pytest.raises(ValueError, match="unknown source 'ftp'"):
        open_source(str(tmp_path), "ftp")
    with pytest.raises(ValueError, match="neither an existing folder nor an http"):
        open_source(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="before_s must be a finite number >= 0"):
        SDSSource(tmp_path / "sds", before_s=-1.0)


class _ConstantClassifier:
    """Stands in for an EventClassifier where no model output matters (argument checks)."""

    class_names = ["earthquake", "explosion"]
    model_id = "constant"

    def __init__(self):
        from quake.data import PreprocessConfig

        self.config = PreprocessConfig()

    def predict_proba(self, waveforms, batch_size=128):
        return np.full((len(waveforms), 2), 0.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"batch_size": 0}, "batch_size must be >= 1"), ({"workers": -1}, "workers must be >= 0"),
     ({"flush_every": 0}, "flush_every must be >= 1")],
)  # fmt: skip
def test_batch_job_validates_its_arguments(tmp_path, kwargs, match):
    events = pd.DataFrame({"event_id": ["a"], "origin_time": [None], "latitude": [None],
                           "longitude": [None], "p_picks": [{}]})  # fmt: skip
    source = EventFolderSource(tmp_path)
    with pytest.raises(ValueError, match=match):
        classify_events(_ConstantClassifier(), events, source, tmp_path / "p.csv", **kwargs)


def test_event_without_origin_time_gets_a_row(tmp_path):
    events = pd.DataFrame({"event_id": ["a", "b"], "origin_time": [None, None], "latitude": [None, None],
                           "longitude": [None, None], "p_picks": [{}, {}]})  # fmt: skip
    (tmp_path / "a").mkdir()
    summary = classify_events(
        _ConstantClassifier(),
        events,
        EventFolderSource(tmp_path),
        tmp_path / "p.csv",
        workers=0,
        progress=False,
    )
    table = pd.read_csv(tmp_path / "p.csv", dtype=str, keep_default_na=False)
    assert list(table["event_id"]) == ["a", "b"]
    assert list(table["skip_reasons"]) == ["no origin time", "no origin time"]
    assert summary.n_unclassified == 2 and summary.skip_counts["no origin time"] == 2


def test_windows_are_scored_in_full_batches_and_events_return_in_order():
    from quake.classify.run import ClassifySummary, WindowBatcher
    from quake.classify.windows import PreparedEvent

    class Recorder(_ConstantClassifier):
        def __init__(self):
            super().__init__()
            self.calls = []

        def predict_proba(self, waveforms, batch_size=128):
            self.calls.append(len(waveforms))
            return waveforms[:, 0, :2].astype(np.float64)  # each window's own id, for checking

    counts = [3, 0, 5, 1, 0, 4, 2]
    n = 8
    events, k = [], 0
    for i, c in enumerate(counts):
        windows = np.zeros((c, 3, n), dtype=np.float32)
        windows[:, 0, 0] = np.arange(k, k + c)
        windows[:, 0, 1] = i
        events.append(PreparedEvent(f"e{i}", windows))
        k += c
    recorder = Recorder()
    batcher = WindowBatcher(recorder, 4, ClassifySummary())
    done = [item for e in events for item in batcher.add(e)] + batcher.finish()
    assert [p.event_id for p, _ in done] == [e.event_id for e in events]
    # whole batches (predict_proba splits them by batch_size), only the last one partial
    assert recorder.calls == [8, 4, 3]
    for i, (prepared, probs) in enumerate(done):
        assert probs.shape == (counts[i], 2)
        np.testing.assert_array_equal(probs[:, 1], i)
        np.testing.assert_array_equal(probs[:, 0], prepared.windows[:, 0, 0])


def test_compact_catalog_holds_the_same_events_read_in_chunks(tmp_path, monkeypatch):
    path = tmp_path / "catalog.csv"
    pd.DataFrame(
        {
            "event_id": ["a", "b", "c", "d", "e"],
            "time": ["2021-01-01T00:00:00.123456Z", "2021-01-02T00:00:00Z", "", "2021-01-02",
                     "2021-01-03T12:00:00Z"],
            "latitude": [45.0, 46.0, None, 1.0, 2.0],
            "magnitude": ["2.0", "x", "", "1", "3"],
            "event_type": ["earthquake", "quarry blast", "", "earthquake", "explosion"],
            "evaluation_status": ["", "reviewed", "", "", "final"],
        }
    ).to_csv(path, index=False)  # fmt: skip
    monkeypatch.setattr(data_catalog, "CSV_CHUNK_ROWS", 2)  # three chunks
    full, compact = read_catalog(path), read_catalog(path, compact=True)
    assert list(compact["event_id"]) == list(full["event_id"])
    assert compact["origin_time"].dtype == "datetime64[ns]"
    assert [utc_or_none(t) for t in compact["origin_time"]] == list(full["origin_time"])
    for name in ("latitude", "longitude", "depth_km", "magnitude"):
        expected = [np.nan if v is None else v for v in full[name]]
        np.testing.assert_array_equal(compact[name].to_numpy(np.float64), expected)
    for name in ("event_type", "evaluation_status", "magnitude_type", "reviewed"):
        assert list(compact[name]) == list(full[name])
    assert compact["event_type"].dtype == "category"
    assert list(compact["p_picks"]) == [None] * 5
    pd.DataFrame({"event_id": list("abcde"), "time": ["", "", "", "", "soon"]}).to_csv(
        path, index=False
    )
    compact = read_catalog(path, compact=True)  # a bad origin time is a skip, not an error
    assert list(compact["skip_reason"]) == ["", "", "", "", "bad origin time: 'soon'"]
    assert pd.isna(compact["origin_time"][4])


def test_compact_catalog_keeps_times_beyond_datetime64(tmp_path):
    """datetime64[ns] covers the years 1677-2262: an older event keeps its UTCDateTime."""
    path = tmp_path / "catalog.csv"
    pd.DataFrame({"event_id": ["old", "new"], "time": ["1600-01-01", "2021-01-01"]}).to_csv(
        path, index=False
    )
    times = [utc_or_none(t) for t in read_catalog(path, compact=True)["origin_time"]]
    assert times == [obspy.UTCDateTime(1600, 1, 1), obspy.UTCDateTime(2021, 1, 1)]
