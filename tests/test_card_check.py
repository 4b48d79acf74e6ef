"""Classification holds its inputs against the model card (``quake.classify.card_check``): on
real recordings and tiny trained models, training events are marked, components and rates that
training never had are named, once per run, and counted in the summary."""

from __future__ import annotations

import json
import logging
import shutil

import h5py
import obspy
import pandas as pd
import pytest
from tiny_run import tiny_run_config

import quake
from quake.classify.card_check import CardCounts, components_text, rate_range
from quake.classify.tables import ClassifySummary, merge_summaries, read_predictions
from quake.deploy.card import read_card, write_card
from quake.training import train

CHECK_LOGGER = "quake.classify.card_check"
EVENT = "uw61362132"  # pnw-eqex's first event
ORIGIN = "2018-04-11T20:55:29.39Z"
STATION = "X7.WA18..HHZ"  # a 100 Hz vertical recording of it


def card_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == CHECK_LOGGER and r.levelno >= logging.WARNING
    ]


@pytest.fixture(scope="module")
def zne_run(real_data_dir, tmp_path_factory):
    """A tiny run on the three-component recordings of eqnoise-3c only (100 Hz; its 39
    vertical-only recordings left out): a model that never saw a ``Z``-only window."""
    source = real_data_dir / "eqnoise-3c"
    if not source.is_dir():
        pytest.skip(f"{source} not found")
    data = tmp_path_factory.mktemp("eqnoise-zne")
    metadata = pd.read_csv(source / "metadata.csv")
    metadata[metadata["trace_components"] == "ZNE"].to_csv(data / "metadata.csv", index=False)
    (data / "waveforms.hdf5").symlink_to(source / "waveforms.hdf5")
    return train(tiny_run_config(data, tmp_path_factory.mktemp("zne-run") / "run")).run_dir


def _vertical(pnw, rate_hz: float) -> obspy.Stream:
    trace = obspy.read(str(pnw / "waveforms" / EVENT / f"{STATION}.mseed"))[0]
    assert trace.stats.sampling_rate == 100.0
    if rate_hz != trace.stats.sampling_rate:
        trace.resample(rate_hz)
    return obspy.Stream([trace])


def _three_components(eqnoise, trace_index: int = 0) -> tuple[obspy.Stream, dict, str]:
    """An earthquake recording of eqnoise-3c as an obspy Stream (Z, N, E at 100 Hz), its P pick
    and its event id."""
    metadata = pd.read_csv(eqnoise / "metadata.csv")
    row = metadata[
        (metadata["trace_components"] == "ZNE") & (metadata["source_type"] == "earthquake")
    ].iloc[trace_index]
    with h5py.File(eqnoise / "waveforms.hdf5", "r") as f:
        data = f["data"][row["trace_name"]][()]
    start = obspy.UTCDateTime("2012-08-25T05:14:59.6Z")
    rate = float(row["trace_sampling_rate_hz"])
    traces = []
    for k, comp in enumerate("ZNE"):
        header = {"network": row["station_network_code"], "station": row["station_code"],
                  "channel": f"{row['trace_channel']}{comp}", "sampling_rate": rate,
                  "starttime": start}  # fmt: skip
        traces.append(obspy.Trace(data[k].astype("float64"), header=header))
    station = f"{row['station_network_code']}.{row['station_code']}."
    pick = {station: start + float(row["trace_p_arrival_sample"]) / rate}
    return obspy.Stream(traces), pick, str(row["source_id"])


# --- the rule and the counts ------------------------------------------------------------------
def test_far_rates_lie_an_octave_beyond_training():
    assert rate_range([100.0]) == (50.0, 200.0)
    assert rate_range([50.0, 100.0, 40.0, 500.0]) == (20.0, 1000.0)
    assert rate_range([]) is None
    assert components_text("Z12") == "ZNE" and components_text("EZ") == "ZE"
    assert components_text("") is None


def test_the_card_counts_of_shards_add_up():
    a, b = ClassifySummary(n_events=3), ClassifySummary(n_events=2)
    a.card_check = CardCounts(compared=True, n_events=3, training_events=2)
    a.card_check.far_rates_hz.update({"40": 2})
    b.card_check = CardCounts(compared=True, n_events=2, training_events=1)
    b.card_check.far_rates_hz.update({"40": 1, "1000": 1})
    merged = merge_summaries([a, b], n_events=5).to_dict()["card_check"]
    assert merged["training_events"] == 3 and merged["n_events"] == 5
    assert merged["far_rates_hz"] == {"40": 3, "1000": 1}


# --- training events --------------------------------------------------------------------------
def test_classifying_the_training_catalog_says_every_event_was_trained_on(
    pnw_run, pnw, tmp_path, capsys, caplog
):
    from quake.commands import classify as cli

    out = tmp_path / "predictions.csv"
    caplog.set_level(logging.INFO, logger=CHECK_LOGGER)
    args = ["--model", str(pnw_run), "--catalog", str(pnw / "catalog.xml"),
            "--waveforms", str(pnw), "--out", str(out), "--no-progress", "--workers", "0"]  # fmt: skip
    assert cli.main(args) == 0
    table = read_predictions(out)
    n = len(read_card(pnw_run / "model")["training_events"])
    assert len(table) == n == 48
    assert table["in_training"].dtype == "boolean" and table["in_training"].all()
    warnings = card_warnings(caplog)
    assert len(warnings) == 1, warnings  # once per run, not per event
    assert "48 of 48 events (every event) were training events" in warnings[0]
    assert "not an independent test" in warnings[0]
    printed = capsys.readouterr().out
    assert "compared with the model card: 48 of 48 events were training events" in printed


def test_a_catalog_mixing_training_and_other_events_marks_each(
    pnw_run, pnw, real_data_dir, tmp_path, caplog
):
    """Three events pnw-eqex trained the model on, three events of unlabelled-pnw it never
    saw: only the first three are marked, and the summary counts 3 of 6."""
    unlabelled = real_data_dir / "unlabelled-pnw"
    if not unlabelled.is_dir():
        pytest.skip(f"{unlabelled} not found")
    trained = pd.read_csv(pnw / "catalog.csv").head(3)[["event_id", "time"]]
    other = pd.read_csv(unlabelled / "catalog.csv").head(3)[["event_id", "time"]]
    waveforms = tmp_path / "waveforms"
    waveforms.mkdir()
    for root, ids in ((pnw, trained["event_id"]), (unlabelled, other["event_id"])):
        for event_id in ids:
            (waveforms / event_id).symlink_to(root / "waveforms" / event_id)
    catalog = tmp_path / "catalog.csv"
    pd.concat([trained, other]).to_csv(catalog, index=False)
    caplog.set_level(logging.WARNING, logger=CHECK_LOGGER)

    table = quake.load(pnw_run).classify_catalog(catalog, tmp_path)
    assert list(table["in_training"]) == [True, True, True, False, False, False]
    assert (table["predicted_class"] != "").all()
    check = table.attrs["summary"]["card_check"]
    assert check["compared"] and (check["training_events"], check["n_events"]) == (3, 6)
    assert check["unseen_components"] == {} and check["far_rates_hz"] == {}
    assert any("3 of 6 events were training events" in m for m in card_warnings(caplog))
    result = quake.load(pnw_run).classify(_vertical(pnw, 100.0), ORIGIN, event_id=EVENT)
    assert result.in_training is True and result.card_check["training_events"] == 1


# --- components and rates ---------------------------------------------------------------------
def test_a_40_hz_vertical_stream_is_named_on_a_three_component_model(zne_run, pnw, caplog):
    clf = quake.load(zne_run)
    assert set(clf.card["components"]) == {"ZNE"}
    assert set(clf.card["sampling_rates_hz"]) == {"100.0"}
    caplog.set_level(logging.WARNING, logger=CHECK_LOGGER)

    result = clf.classify(_vertical(pnw, 40.0), origin_time=ORIGIN, event_id=EVENT)
    assert result.predicted_class is not None and result.in_training is False
    assert result.card_check["unseen_components"] == {"Z": 1}
    assert result.card_check["far_rates_hz"] == {"40": 1}
    warnings = card_warnings(caplog)
    assert len(warnings) == 3, warnings  # components, rate, and origin time against P picks
    components, rates, anchors = warnings
    assert "components that no training recording had: Z x1 (training: ZNE)" in components
    assert "40 Hz x1" in rates and "below 50 or above 200 Hz" in rates
    assert "station X7.WA18." in rates
    assert "training windows started from the P pick" in anchors

    caplog.clear()  # at the model's own rate the components and the anchor differ
    result = clf.classify(_vertical(pnw, 100.0), origin_time=ORIGIN)
    assert result.card_check["far_rates_hz"] == {} and result.in_training is None
    assert len(card_warnings(caplog)) == 2


def test_a_training_recording_on_three_components_is_only_marked_trained_on(
    zne_run, real_data_dir, caplog
):
    stream, pick, event_id = _three_components(real_data_dir / "eqnoise-3c")
    caplog.set_level(logging.WARNING, logger=CHECK_LOGGER)
    result = quake.load(zne_run).classify(stream, picks=pick, event_id=event_id)
    check = result.card_check
    assert result.in_training is True and check["n_windows"] == 1
    assert check["unseen_components"] == {} and check["far_rates_hz"] == {}
    assert check["anchors"] == {"p_pick": 1}
    assert len(card_warnings(caplog)) == 1  # the training event, nothing else


# --- anchors ----------------------------------------------------------------------------------
def test_windows_at_p_picks_are_named_where_the_card_says_training_followed_origin_times(
    pnw_run, pnw, tmp_path, caplog
):
    """pnw-eqex has no P picks: its training windows followed origin times (the run's log says
    so, and the card's ``window.anchored_at``; the saved ``anchor`` is ``p_arrival`` either
    way): windows cut at P picks are a difference worth a warning. A card without
    ``anchored_at`` (saved before it existed) cannot say: an info line gives the run's anchors."""
    stream = _vertical(pnw, 100.0)
    picks = {"X7.WA18.": obspy.UTCDateTime(ORIGIN) + 6.0}
    metrics = json.loads((pnw_run / "metrics.json").read_text())
    assert metrics["data"]["windows_follow_picks"] is False
    model = shutil.copytree(pnw_run / "model", tmp_path / "model")
    card = read_card(model)
    assert card["window"]["anchor"] == "p_arrival"
    assert card["window"]["anchored_at"] == {"origin_time": sum(card["classes"].values())}
    older = dict(card, window={k: v for k, v in card["window"].items() if k != "anchored_at"})
    write_card(model, older)
    caplog.set_level(logging.INFO, logger=CHECK_LOGGER)
    quake.load(model).classify(stream, ORIGIN, picks=picks)
    assert card_warnings(caplog) == []
    assert any("anchors not compared" in r.getMessage() for r in caplog.records)

    write_card(model, card)
    clf = quake.load(model)
    caplog.clear()
    assert clf.classify(stream, ORIGIN).card_check["other_anchors"] == {}
    assert card_warnings(caplog) == []
    result = clf.classify(stream, ORIGIN, picks=picks)
    assert result.card_check["other_anchors"] == {"p_pick": 1}
    (warning,) = card_warnings(caplog)
    assert "start from the P pick" in warning and "started from the origin time" in warning


# --- no card ----------------------------------------------------------------------------------
def test_a_model_without_card_classifies_without_comparison(model_dir, pnw, caplog):
    clf = quake.load(model_dir)
    assert clf.card is None
    caplog.set_level(logging.INFO, logger=CHECK_LOGGER)
    catalog = obspy.read_events(str(pnw / "catalog.xml"))[:3]
    table = clf.classify_catalog(catalog, pnw)
    assert len(table) == 3 and table["in_training"].isna().all()
    assert table.attrs["summary"]["card_check"]["compared"] is False
    result = clf.classify(_vertical(pnw, 40.0), ORIGIN, event_id=EVENT)
    assert result.predicted_class is not None
    assert result.in_training is None and result.card_check["compared"] is False
    messages = [r for r in caplog.records if r.name == CHECK_LOGGER]
    assert [r.levelno for r in messages] == [logging.INFO, logging.INFO]  # one per run
    assert all("has no card" in r.getMessage() for r in messages)
