"""The one catalog parser (quake.data.catalog) that training and classification share."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import obspy
import pandas as pd
import pytest
from obspy import Stream, Trace, UTCDateTime
from obspy.core.event import (
    Catalog,
    Event,
    Magnitude,
    Origin,
    Pick,
    ResourceIdentifier,
    WaveformStreamID,
)

from quake import classify
from quake.classes import ClassNames, class_to_event_type, event_type_to_class
from quake.data import LabelSpec, PreprocessConfig, open_dataset
from quake.data.catalog import (
    CATALOG_COLUMNS,
    CATALOG_FILES,
    find_catalog,
    first_p_picks,
    quakeml_event_id,
    read_catalog,
)
from quake.data.readers.catalog import CatalogDataset

ORIGIN = UTCDateTime("2021-06-01T12:00:00")


def _pick(seconds: float, phase: str | None, location: str | None = "", station: str = "ST1"):
    return Pick(
        time=ORIGIN + seconds,
        phase_hint=phase,
        waveform_id=WaveformStreamID("XX", station, location, "HHZ"),
    )


def _event(event_id: str, event_type: str | None = "earthquake", picks=()) -> Event:
    event = Event(resource_id=ResourceIdentifier(f"smi:test.org/event/{event_id}"))
    event.event_type = event_type
    origin = Origin(time=ORIGIN, latitude=46.0, longitude=-122.0, depth=5000.0)
    magnitude = Magnitude(mag=2.5, magnitude_type="ml")
    event.origins.append(origin)
    event.magnitudes.append(magnitude)
    event.preferred_origin_id = origin.resource_id
    event.preferred_magnitude_id = magnitude.resource_id
    event.picks.extend(picks)
    return event


@pytest.fixture
def quakeml_folder(tmp_path):
    """Two events with P picks and one waveform file each: a catalog both sides can read."""
    rng = np.random.default_rng(11)
    picks = [_pick(7.0, "P"), _pick(6.0, "S"), _pick(9.0, "Pn", location="00")]
    Catalog(events=[_event("ev1", picks=picks), _event("ev2", "explosion")]).write(
        str(tmp_path / "catalog.xml"), format="QUAKEML"
    )
    for event_id in ("ev1", "ev2"):
        folder = tmp_path / "waveforms" / event_id
        folder.mkdir(parents=True)
        header = {"network": "XX", "station": "ST1", "channel": "HHZ", "sampling_rate": 100.0}
        trace = Trace(rng.normal(size=6000), header={**header, "starttime": ORIGIN - 20})
        Stream([trace]).write(str(folder / "XX.ST1..HHZ.mseed"), format="MSEED")
    return tmp_path


def test_training_and_classification_read_the_same_events(quakeml_folder):
    dataset = open_dataset(quakeml_folder)
    table = classify.read_catalog(quakeml_folder / "catalog.xml")
    pd.testing.assert_frame_equal(dataset.events, table)
    assert list(table.columns) == list(CATALOG_COLUMNS)
    assert list(table["event_id"]) == ["ev1", "ev2"]
    assert list(table["magnitude_type"]) == ["ml", "ml"]
    assert table["depth_km"][0] == pytest.approx(5.0)
    # the dataset's P anchor is the pick the table holds for the station
    meta = dataset.metadata.set_index("trace_name")
    start = UTCDateTime(meta.loc["ev1.XX.ST1..HH", "trace_start_time"])
    pick = table["p_picks"][0]["XX.ST1."]
    expected = (pick - start) * dataset.config.sampling_rate_hz
    assert meta.loc["ev1.XX.ST1..HH", "trace_p_arrival_sample"] == pytest.approx(expected)
    assert np.isnan(meta.loc["ev2.XX.ST1..HH", "trace_p_arrival_sample"])


def test_first_p_pick_per_station_with_and_without_location():
    event = _event(
        "ev1",
        picks=[
            _pick(8.0, "P", location="00"),
            _pick(7.5, " p "),  # phase hints are trimmed and case-blind
            _pick(6.0, "S", location="00"),  # not a P phase
            _pick(5.0, None),  # no phase: not counted
            _pick(9.0, "Pg", location=None),  # no location code: the empty one
            _pick(3.0, "Pn", station="ST2"),
        ],
    )
    picks = first_p_picks(event)
    assert picks == {
        "XX.ST1.00": ORIGIN + 8.0,
        "XX.ST1.": ORIGIN + 7.5,
        "XX.ST1": ORIGIN + 7.5,  # the first over every location
        "XX.ST2.": ORIGIN + 3.0,
        "XX.ST2": ORIGIN + 3.0,
    }


def test_repeated_event_ids_are_an_error_for_a_training_catalog_too(tmp_path):
    (tmp_path / "waveforms").mkdir()
    Catalog(events=[_event("ev1"), _event("ev1", "explosion")]).write(
        str(tmp_path / "catalog.xml"), format="QUAKEML"
    )
    with pytest.raises(ValueError, match=r"not unique under this id rule: \['ev1'\]"):
        open_dataset(tmp_path)


def test_bad_origin_times_are_named_in_one_warning(tmp_path, caplog):
    path = tmp_path / "catalog.csv"
    path.write_text("event_id,time\nev1,yesterday\nev2,2021-06-01T12:00:00\nev3,2021-02-30\n")
    table = read_catalog(path)
    assert list(table["skip_reason"]) == [
        "bad origin time: 'yesterday'",
        "",
        "bad origin time: '2021-02-30'",
    ]
    assert table["origin_time"].tolist() == [None, ORIGIN, None]
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "2 event(s) will be skipped" in warning
    assert "ev1 (bad origin time: 'yesterday')" in warning
    assert "ev3 (bad origin time: '2021-02-30')" in warning


def test_a_bad_quakeml_origin_time_is_named(tmp_path):
    """obspy reads a time it cannot parse as None; the event's skip reason names the text."""
    path = tmp_path / "catalog.xml"
    Catalog(events=[_event("ev1"), _event("ev2")]).write(str(path), format="QUAKEML")
    text = path.read_text()
    path.write_text(text.replace(str(ORIGIN), "2018-13-45T99:00:00", 1))
    with pytest.warns(UserWarning, match="Could not convert"):
        table = read_catalog(path)
    assert list(table["skip_reason"]) == ["bad origin time: '2018-13-45T99:00:00'", ""]


def test_each_side_requires_the_csv_columns_it_needs(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text("event_id,event_type\nev1,earthquake\n")
    table = read_catalog(path)  # the parser alone requires only the id column
    assert table["origin_time"].tolist() == [None] and table["event_type"].tolist() == [
        "earthquake"
    ]
    with pytest.raises(ValueError, match=r"catalog .*catalog.csv has no origin time column"):
        classify.read_catalog(path)  # classification finds waveforms by origin time
    path.write_text("event_id,time\nev1,2021-06-01T12:00:00\n")
    assert classify.read_catalog(path)["origin_time"].tolist() == [ORIGIN]
    with pytest.raises(ValueError, match=r"has no 'event_type' column"):
        read_catalog(path, require=("event_type",))  # training needs labels
    with pytest.raises(ValueError, match=r"cannot require \['labels'\]; expected some of"):
        read_catalog(path, require=("labels",))


def test_unreadable_and_headerless_csv_catalogs(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_bytes(b"event_id,time\n\xff\xfe,2021\n")
    with pytest.raises(ValueError, match=r"cannot read catalog .*catalog.csv"):
        read_catalog(path)
    path.write_bytes(b"")
    empty = read_catalog(path)
    assert empty.empty and list(empty.columns) == list(CATALOG_COLUMNS)
    with pytest.raises(ValueError, match=r"catalog .*catalog.csv holds no event"):
        open_dataset(tmp_path)


# --- one rule for QuakeML event type <-> class name ----------------------------------------------
def test_noise_is_the_quakeml_type_not_existing_both_ways():
    assert class_to_event_type("noise") == "not existing"
    assert event_type_to_class("not existing") == "noise"
    for name in ("earthquake", "explosion", "quarry blast"):
        assert class_to_event_type(name) == name and event_type_to_class(name) == name
    assert event_type_to_class("Not_Existing") == "noise" and event_type_to_class("") == ""
    # one class, one name: the QuakeML type of noise is read as noise wherever labels are read
    assert ClassNames(["not existing", "earthquake"]) == ["noise", "earthquake"]
    assert ClassNames.from_labels(["noise", "not existing", "earthquake"]) == [
        "earthquake",
        "noise",
    ]
    assert ClassNames(["earthquake", "noise"]).index("not existing") == 1
    assert LabelSpec().class_name("not existing") == "noise"


def test_a_csv_catalog_written_as_quakeml_names_noise_not_existing(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text(
        "event_id,time,event_type\nev1,2021-06-01T12:00:00,noise\nev2,2021-06-01T13:00:00,earthquake\n"
    )
    _, catalog = classify.read_catalog_with_events(path)
    assert [event.event_type for event in catalog] == ["not existing", "earthquake"]


def _noise_model(folder: Path) -> Path:
    """A tiny classifier (earthquake, noise) whose head always says noise."""
    import torch

    from quake.deploy.ensemble import EventClassifier
    from quake.models import HybridViT

    config = PreprocessConfig()
    model = HybridViT(depth=1, img_size=config.spectrogram_shape[1:],
                      class_names=["earthquake", "noise"])  # fmt: skip
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 5.0]))
    return EventClassifier([model], config).save(folder)


def _link_waveforms(pnw: Path, folder: Path, event_ids) -> None:
    (folder / "waveforms").mkdir(parents=True)
    for event_id in event_ids:
        (folder / "waveforms" / event_id).symlink_to(pnw / "waveforms" / event_id)


def test_noise_written_by_classification_reads_back_as_noise_for_training(pnw, tmp_path):
    from quake.classify.run import run_classification
    from quake.deploy import load

    subset = Catalog(events=list(obspy.read_events(str(pnw / "catalog.xml")))[:3])
    subset.write(str(tmp_path / "catalog.xml"), format="QUAKEML")
    event_ids = [quakeml_event_id(event) for event in subset]
    training = tmp_path / "training"
    _link_waveforms(pnw, training, event_ids)

    summary = run_classification(
        load(_noise_model(tmp_path / "model")), tmp_path / "catalog.xml", str(pnw),
        tmp_path / "predictions.csv", quakeml=training / "catalog.xml", overwrite_types=True,
        overwrite_reviewed=True, workers=0, progress=False,
    )  # fmt: skip
    assert summary.quakeml_counts["set"] == 3
    written = obspy.read_events(str(training / "catalog.xml"))
    assert [event.event_type for event in written] == ["not existing"] * 3

    dataset = CatalogDataset(training)
    assert len(dataset) > 0 and not dataset.skipped
    assert list(dataset.class_names) == ["noise"]
    assert set(dataset.labels) == {"noise"}
    assert list(open_dataset(training / "catalog.xml").class_names) == ["noise"]


# --- one list of catalog file names, one function that finds a folder's catalog ------------------
def test_find_catalog_looks_for_every_catalog_name_in_order(tmp_path):
    assert CATALOG_FILES == ("catalog.xml", "catalog.quakeml", "catalog.qml", "catalog.csv")
    assert find_catalog(tmp_path) is None
    (tmp_path / "catalog.csv").write_text("event_id,time\n")
    assert find_catalog(tmp_path) == tmp_path / "catalog.csv"
    (tmp_path / "catalog.qml").write_text("")
    assert find_catalog(tmp_path) == tmp_path / "catalog.qml"  # QuakeML before CSV
    assert find_catalog(tmp_path / "catalog.csv") == tmp_path / "catalog.csv"  # a catalog file
    (tmp_path / "events.txt").write_text("")
    assert find_catalog(tmp_path / "events.txt") is None
    assert find_catalog(tmp_path / "missing") is None
    with pytest.raises(
        ValueError, match=r"events.txt is a file; expected .* \(\.xml, .*\.qml, \.csv\)"
    ):
        open_dataset(tmp_path / "events.txt")
    with pytest.raises(
        ValueError, match=r"'.*events.txt' holds no catalog; expected a catalog file"
    ):
        CatalogDataset(tmp_path / "events.txt")


def test_a_folder_with_catalog_qml_is_opened_by_training_pretraining_and_classification(
    pnw, tmp_path
):
    from quake.pretrain.data import open_unlabelled
    from quake.training.config import load_config
    from quake.training.run import open_training_set

    shutil.copy(pnw / "catalog.xml", tmp_path / "catalog.qml")
    events = read_catalog(tmp_path / "catalog.qml")
    kept = [
        event_id
        for event_type in ("earthquake", "explosion")
        for event_id in events.loc[events["event_type"] == event_type, "event_id"][:2]
    ]
    _link_waveforms(pnw, tmp_path, kept)
    assert find_catalog(tmp_path) == tmp_path / "catalog.qml"

    dataset = open_training_set(load_config(None, {"data.path": str(tmp_path)}))
    assert isinstance(dataset, CatalogDataset) and dataset.catalog_path.name == "catalog.qml"
    assert list(dataset.class_names) == ["earthquake", "explosion"]
    assert set(dataset.metadata["source_id"]) == set(kept)  # the other events: no folder, skipped

    unlabelled, kind = open_unlabelled(tmp_path, PreprocessConfig())
    assert kind == "catalog" and set(unlabelled.metadata["source_id"]) == set(kept)
    assert classify.read_catalog(tmp_path / "catalog.qml")["event_id"].tolist() == list(
        events["event_id"]
    )
