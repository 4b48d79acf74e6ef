"""Batch classification on the real pnw-eqex catalog (skipped where absent) with a tiny random model.

The model is untrained (random HybridViT, depth 1): these tests check that every event gets one
row, that bad data is skipped with its reason, the QuakeML round trip and resume — not accuracy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import obspy
import pandas as pd
import pytest

from quake.classify import (
    annotate_catalog,
    classify_events,
    open_source,
    prob_column,
    read_catalog,
    read_catalog_with_events,
    read_predictions,
)
from quake.classify.catalog import KNOWN_PROBABILITY
from quake.classify.run import run_classification
from quake.data import WaveformDataAdapter, open_dataset
from quake.deploy import load
from quake.deploy.ensemble import EventClassifier

CLASSES = ["earthquake", "explosion"]
PROBS = [prob_column(c) for c in CLASSES]
TRUNCATED_EVENT, TRUNCATED_STATION = "uw61551907", "CC.HIYU."  # trace ends before the origin
GAPPY_EVENT, GAPPY_STATION = "uw61722766", "UW.PRIN."  # 3.5 s, an 18 s gap, then the rest
REVIEWED_MANUAL, REVIEWED_STATUS = 0, 1  # catalog positions planted as analyst-reviewed


@pytest.fixture(scope="module")
def classifier(model_dir) -> EventClassifier:
    return EventClassifier.load(model_dir)


@pytest.fixture(scope="module")
def reviewed_catalog(pnw, tmp_path_factory) -> Path:
    """pnw-eqex's QuakeML with two events marked as set by an analyst."""
    catalog = obspy.read_events(str(pnw / "catalog.xml"))
    catalog[REVIEWED_MANUAL].origins[0].evaluation_mode = "manual"
    catalog[REVIEWED_STATUS].origins[0].evaluation_status = "reviewed"
    path = tmp_path_factory.mktemp("catalog") / "catalog.xml"
    catalog.write(str(path), format="QUAKEML")
    return path


@pytest.fixture(scope="module")
def full_run(pnw, classifier, reviewed_catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    summary = run_classification(
        classifier,
        reviewed_catalog,
        str(pnw),
        out / "predictions.csv",
        quakeml=out / "classified.xml",
        stations_out=out / "stations.csv",
        batch_size=64,
        workers=1,
        progress=False,
    )
    return {
        "summary": summary,
        "predictions": read_predictions(out / "predictions.csv"),
        "stations": pd.read_csv(out / "stations.csv", dtype=str, keep_default_na=False),
        "quakeml": out / "classified.xml",
        "dir": out,
    }


def _probs(table: pd.DataFrame) -> np.ndarray:
    return table[PROBS].astype(float).to_numpy()


# --- the real catalog -------------------------------------------------------------------------
def test_every_event_gets_exactly_one_row(full_run, pnw, classifier):
    preds = full_run["predictions"]
    catalog_ids = [
        ev.resource_id.id.rsplit("/", 1)[-1] for ev in obspy.read_events(str(pnw / "catalog.xml"))
    ]
    assert len(catalog_ids) == 48
    assert list(preds["event_id"]) == catalog_ids
    assert list(preds.columns[:3]) == ["event_id", "origin_time", "predicted_class"]
    assert set(PROBS) <= set(preds.columns)
    probs = _probs(preds)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert list(preds["predicted_class"]) == [CLASSES[i] for i in probs.argmax(axis=1)]
    assert (preds["model_id"] == classifier.model_id).all()
    used = preds["n_stations_used"].astype(int)
    assert (used > 0).all()
    summary = full_run["summary"]
    assert summary.n_classified == 48 and summary.n_windows == used.sum()


def test_truncated_trace_is_skipped_with_its_reason(full_run):
    row = full_run["predictions"].set_index("event_id").loc[TRUNCATED_EVENT]
    assert f"{TRUNCATED_STATION}: too short" in row["skip_reasons"]
    assert int(row["n_stations_skipped"]) >= 1 and int(row["n_stations_used"]) >= 1
    stations = full_run["stations"]
    skipped = stations[
        (stations["event_id"] == TRUNCATED_EVENT) & (stations["station_id"] == TRUNCATED_STATION)
    ]
    assert list(skipped["status"]) == ["skipped"] and list(skipped["reason"]) == ["too short"]
    assert full_run["summary"].skip_counts["too short"] >= 1


def test_mixed_rates_gaps_and_vertical_only_stations_are_used(full_run):
    stations = full_run["stations"]
    used = stations[stations["status"] == "used"]
    rates = set(used["sampling_rate_hz"].astype(float))
    assert {40.0, 50.0, 100.0, 200.0, 500.0} <= rates  # resampled to the model's 100 Hz
    assert used["channels"].str.fullmatch(r"[A-Z]{2}Z").all()  # Z only: N, E filled by policy
    gappy = used[(used["event_id"] == GAPPY_EVENT) & (used["station_id"] == GAPPY_STATION)]
    assert len(gappy) == 1
    # Per-station rows hold the same counts as the event rows.
    per_event = used.groupby("event_id").size()
    preds = full_run["predictions"].set_index("event_id")
    assert (
        per_event.reindex(preds.index).fillna(0).astype(int) == preds["n_stations_used"].astype(int)
    ).all()


def test_quakeml_round_trip_keeps_the_analysts_types(full_run, reviewed_catalog, classifier):
    original = obspy.read_events(str(reviewed_catalog))
    classified = obspy.read_events(str(full_run["quakeml"]))
    preds = full_run["predictions"]
    assert len(classified) == len(original) == len(preds)
    for before, after, row in zip(original, classified, preds.to_dict("records"), strict=True):
        assert after.resource_id == before.resource_id
        assert any(
            classifier.model_id in c.text and row["predicted_class"] in c.text
            for c in after.comments
        )
        # the analyst's types are kept: reviewed ones, and every other typed one by default
        assert after.event_type == before.event_type and before.event_type is not None
        assert after.event_type_certainty == before.event_type_certainty
    counts = full_run["summary"].quakeml_counts
    assert counts["kept_reviewed"] == 2 and counts["kept_typed"] == 46 and counts["set"] == 0


def test_overwrite_reviewed_sets_every_type(full_run, reviewed_catalog, classifier):
    events, catalog = read_catalog_with_events(reviewed_catalog)
    assert list(np.flatnonzero(events["reviewed"])) == [REVIEWED_MANUAL, REVIEWED_STATUS]
    preds = full_run["predictions"]
    before = [ev.event_type for ev in catalog]
    counts = annotate_catalog(
        catalog,
        list(events["event_id"]),
        preds,
        CLASSES,
        PROBS,
        classifier.model_id,
        overwrite_reviewed=True,
        overwrite_types=True,
    )
    assert counts["set"] == 48 and counts["kept_reviewed"] == 0 and counts["kept_typed"] == 0
    assert [ev.event_type for ev in catalog] == list(preds["predicted_class"])
    changed = [b != p for b, p in zip(before, preds["predicted_class"], strict=True)]
    assert counts["replaced"] == sum(changed)
    for event, was, replaced in zip(catalog, before, changed, strict=True):
        assert event.comments[-1].text.endswith(f"; previous type: {was}") == replaced


def test_min_probability_leaves_unsure_events_to_the_analyst(full_run, pnw, classifier, tmp_path):
    threshold = float(np.median(_probs(full_run["predictions"]).max(axis=1)))
    out, quakeml = tmp_path / "predictions.csv", tmp_path / "classified.xml"
    summary = run_classification(classifier, pnw / "catalog.xml", str(pnw), out, quakeml=quakeml,
                                 overwrite_types=True, min_probability=threshold, workers=0,
                                 progress=False)  # fmt: skip
    marked = read_predictions(out)
    top = _probs(marked).max(axis=1)
    unsure = top < threshold
    assert 0 < unsure.sum() < 48 and summary.n_for_review == unsure.sum()
    assert list(marked["review"] != "") == list(unsure)
    counts = summary.quakeml_counts
    assert counts["for_review"] == unsure.sum() and counts["set"] == 48 - unsure.sum()
    original = obspy.read_events(str(pnw / "catalog.xml"))
    classified = obspy.read_events(str(quakeml))
    rows = marked.to_dict("records")
    for before, after, row, p, is_unsure in zip(
        original, classified, rows, top, unsure, strict=True
    ):
        if is_unsure:  # no type from the model: the analyst's stays, the comment says why
            assert after.event_type == before.event_type
            assert "for review: probability" in after.comments[-1].text
        else:
            assert after.event_type == row["predicted_class"]
            assert after.event_type_certainty == (
                "known" if p >= KNOWN_PROBABILITY else "suspected"
            )

    # the rows kept by --resume follow the new threshold
    summary = run_classification(classifier, pnw / "catalog.xml", str(pnw), out, resume=True,
                                 min_probability=0.0, workers=0, progress=False)  # fmt: skip
    assert summary.n_resumed == 48 and summary.n_for_review == 0
    assert (read_predictions(out)["review"] == "").all()
    with pytest.raises(
        ValueError, match=r"--min-probability 1.5: expected a probability in \[0, 1\]"
    ):
        run_classification(classifier, pnw / "catalog.xml", str(pnw), tmp_path / "x.csv",
                           min_probability=1.5)  # fmt: skip


def test_agreement_with_the_catalog_types_is_reported(full_run, reviewed_catalog):
    events, _ = read_catalog_with_events(reviewed_catalog)
    preds = full_run["predictions"].set_index("event_id")
    expected = {}
    for event_id, event_type in zip(events["event_id"], events["event_type"], strict=True):
        row = expected.setdefault(event_type, {c: 0 for c in CLASSES})
        row[preds.loc[event_id, "predicted_class"]] += 1
    assert full_run["summary"].agreement == expected
    assert sum(n for row in expected.values() for n in row.values()) == 48
    table = pd.read_csv(full_run["dir"] / "predictions.agreement.csv")
    assert table.set_index("catalog type").to_dict("index") == expected


def test_resume_gives_the_same_output(full_run, pnw, reviewed_catalog, classifier, tmp_path):
    out, stations_out = tmp_path / "predictions.csv", tmp_path / "stations.csv"
    lines = (full_run["dir"] / "predictions.csv").read_text().splitlines(keepends=True)
    out.write_text("".join(lines[: 1 + 24]))  # header + the first half, as after an interruption
    shutil.copy(full_run["dir"] / "stations.csv", stations_out)
    summary = run_classification(
        classifier,
        reviewed_catalog,
        str(pnw),
        out,
        stations_out=stations_out,
        resume=True,
        workers=0,
        progress=False,
    )
    assert summary.n_resumed == 24 and summary.n_classified == 24
    resumed, full = read_predictions(out), full_run["predictions"]
    assert list(resumed.columns) == list(full.columns)
    others = [c for c in full.columns if c not in PROBS]
    pd.testing.assert_frame_equal(resumed[others], full[others])
    np.testing.assert_allclose(_probs(resumed), _probs(full), atol=1e-5)
    stations = pd.read_csv(stations_out, dtype=str, keep_default_na=False)
    assert list(stations["event_id"] + stations["station_id"]) == list(
        full_run["stations"]["event_id"] + full_run["stations"]["station_id"]
    )


def test_resume_of_a_file_cut_short_names_the_line(
    full_run, pnw, reviewed_catalog, classifier, tmp_path
):
    out = tmp_path / "predictions.csv"
    text = (full_run["dir"] / "predictions.csv").read_text()
    lines = text.splitlines(keepends=True)
    cut = "".join(lines[:11]) + lines[11][:30]  # the 11th row cut in the middle
    out.write_text(cut)
    with pytest.raises(ValueError, match=r"cannot resume .*predictions.csv: line 12 is incomplete"):
        run_classification(classifier, reviewed_catalog, str(pnw), out, resume=True, progress=False)
    assert out.read_text() == cut  # left as it was


class _PowerCut(RuntimeError):
    pass


class _FailingClassifier:
    """The test classifier, failing on its n-th model call (an interrupted job)."""

    def __init__(self, classifier, fail_on_call: int):
        self._classifier, self._fail_on_call, self.calls = classifier, fail_on_call, 0
        self.class_names, self.config = classifier.class_names, classifier.config
        self.model_id = classifier.model_id

    def predict_proba(self, waveforms, batch_size=128):
        self.calls += 1
        if self.calls == self._fail_on_call:
            raise _PowerCut("interrupted")
        return self._classifier.predict_proba(waveforms, batch_size)


def test_interrupted_run_leaves_complete_rows_and_resumes(full_run, pnw, classifier, tmp_path):
    out = tmp_path / "predictions.csv"
    events = read_catalog(pnw / "catalog.csv")
    failing = _FailingClassifier(classifier, fail_on_call=3)
    with pytest.raises(_PowerCut):
        classify_events(failing, events, open_source(str(pnw)), out, batch_size=64, workers=0,
                         flush_every=1, flush_interval_s=0.0, progress=False)  # fmt: skip
    partial = read_predictions(out)
    assert 0 < len(partial) < len(events)
    assert list(partial["event_id"]) == list(events["event_id"][: len(partial)])
    summary = classify_events(classifier, events, open_source(str(pnw)), out, batch_size=64,
                               workers=0, resume=True, progress=False)  # fmt: skip
    assert summary.n_resumed == len(partial)
    # The CSV catalog, read without a worker and resumed, gives the QuakeML run's rows.
    final, full = read_predictions(out), full_run["predictions"]
    assert list(final["event_id"]) == list(full["event_id"])
    assert list(final["origin_time"]) == list(full["origin_time"])
    np.testing.assert_allclose(_probs(final), _probs(full), atol=1e-5)


def test_resume_refuses_another_models_output(full_run, pnw, classifier, tmp_path):
    out = tmp_path / "predictions.csv"
    table = full_run["predictions"].head(3).copy()
    table["model_id"] = "another-model"
    table.to_csv(out, index=False)
    events = read_catalog(pnw / "catalog.csv").head(5)
    with pytest.raises(ValueError, match=r"cannot resume .*another-model"):
        classify_events(
            classifier, events, open_source(str(pnw)), out, resume=True, workers=0, progress=False
        )


# --- robustness: a corrupted copy ------------------------------------------------------------
@pytest.fixture(scope="module")
def damaged_copy(pnw, tmp_path_factory):
    """Four pnw events copied, one file overwritten with junk, one truncated mid-record, a junk
    file added, plus a catalog event whose folder does not exist."""
    root = tmp_path_factory.mktemp("damaged")
    catalog = pd.read_csv(pnw / "catalog.csv", dtype=str)
    keep = catalog.iloc[[0, 3, 7, 10]]
    for event_id in keep["event_id"]:
        shutil.copytree(pnw / "waveforms" / event_id, root / "waveforms" / event_id)
    first, second = (root / "waveforms" / e for e in keep["event_id"][:2])
    junk_file = sorted(first.glob("*.mseed"))[0]
    junk_file.write_bytes(np.random.default_rng(0).bytes(4096))
    (second / "XX.JUNK..HHZ.mseed").write_bytes(b"not a miniSEED file at all\n" * 50)
    cut_file = sorted(second.glob("*.mseed"))[0]
    cut_file.write_bytes(cut_file.read_bytes()[:700])
    missing = keep.iloc[:1].assign(event_id="uw00000000")
    pd.concat([keep, missing]).to_csv(root / "catalog.csv", index=False)
    return {"root": root, "junk": (first.name, junk_file.name), "added": second.name}


def test_corrupted_files_do_not_stop_the_run(damaged_copy, classifier, tmp_path):
    out = tmp_path / "predictions.csv"
    events = read_catalog(damaged_copy["root"] / "catalog.csv")
    summary = classify_events(
        classifier, events, open_source(str(damaged_copy["root"])), out, workers=1, progress=False
    )
    preds = read_predictions(out).set_index("event_id")
    assert list(preds.index) == list(events["event_id"])
    event_id, file_name = damaged_copy["junk"]
    assert f"{file_name}: unreadable file" in preds.loc[event_id, "skip_reasons"]
    assert "XX.JUNK..HHZ.mseed: unreadable file" in preds.loc[damaged_copy["added"], "skip_reasons"]
    assert summary.skip_counts["unreadable file"] >= 2
    classified = preds.drop(index="uw00000000")
    assert (classified["predicted_class"] != "").all()


def test_event_without_folder_gets_a_row_saying_so(damaged_copy, classifier, tmp_path):
    out = tmp_path / "predictions.csv"
    events = read_catalog(damaged_copy["root"] / "catalog.csv")
    classify_events(
        classifier, events, open_source(str(damaged_copy["root"])), out, workers=0, progress=False
    )
    row = read_predictions(out).set_index("event_id").loc["uw00000000"]
    assert row["predicted_class"] == "" and row["skip_reasons"] == "no waveform folder"
    assert row["n_stations_used"] == "0" and all(row[c] == "" for c in PROBS)


def _load_cli():
    from quake.commands import classify

    return classify


def test_cli_classifies_and_rejects_a_bad_id_rule(damaged_copy, model_dir, tmp_path, capsys):
    cli = _load_cli()
    out, qml = tmp_path / "p.csv", tmp_path / "c.xml"
    args = ["--model", str(model_dir), "--catalog", str(damaged_copy["root"] / "catalog.csv"),
            "--waveforms", str(damaged_copy["root"]), "--out", str(out), "--quakeml", str(qml),
            "--no-progress", "--workers", "0"]  # fmt: skip
    assert cli.main(args) == 0
    assert len(read_predictions(out)) == 5 and len(obspy.read_events(str(qml))) == 5
    assert "5 events" in capsys.readouterr().out
    first = out.read_text()
    assert cli.main([*args, "--resume"]) == 0
    assert "5 kept from a previous run" in capsys.readouterr().out and out.read_text() == first
    assert cli.main([*args, "--id-rule", "bogus"]) == 2
    assert "unknown id rule 'bogus'" in capsys.readouterr().err


# --- other sources ----------------------------------------------------------------------------
def _write_sds(stream: obspy.Stream, root: Path) -> None:
    """SDS layout YEAR/NET/STA/CHA.D/NET.STA.LOC.CHA.D.YEAR.DOY, split at midnight."""
    for trace in stream:
        t, end = trace.stats.starttime, trace.stats.endtime
        while t <= end:
            midnight = obspy.UTCDateTime(t.year, t.month, t.day) + 86400
            piece = trace.slice(t, min(end, midnight - trace.stats.delta / 2))
            s = piece.stats
            folder = root / f"{t.year}" / s.network / s.station / f"{s.channel}.D"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{s.network}.{s.station}.{s.location}.{s.channel}.D.{t.year}.{t.julday:03d}"
            target = folder / name
            existing = obspy.read(str(target)) if target.exists() else obspy.Stream()
            (existing + piece).write(str(target), format="MSEED")
            t = midnight


def test_sds_archive_gives_the_folder_predictions(full_run, pnw, classifier, tmp_path):
    event_ids = ["uw61362132", "uw61813976"]  # the second crosses midnight
    stream = obspy.Stream()
    for event_id in event_ids:
        for path in sorted((pnw / "waveforms" / event_id).glob("*.mseed")):
            stream += obspy.read(str(path))
    _write_sds(stream, tmp_path / "sds")
    events = read_catalog(pnw / "catalog.csv")
    events = events[events["event_id"].isin(event_ids)].reset_index(drop=True)
    source = open_source(str(tmp_path / "sds"), before_s=60, after_s=120)
    assert source.kind == "sds"
    out = tmp_path / "predictions.csv"
    classify_events(classifier, events, source, out, workers=0, progress=False)
    preds = read_predictions(out).set_index("event_id")
    full = full_run["predictions"].set_index("event_id").loc[event_ids]
    assert list(preds["n_stations_used"]) == list(full["n_stations_used"])
    np.testing.assert_allclose(_probs(preds), _probs(full), atol=1e-4)


def test_seisbench_set_matched_by_source_id(real_data_dir, classifier, tmp_path):
    path = real_data_dir / "eqnoise-3c"
    metadata = pd.read_csv(path / "metadata.csv")
    source_ids = list(metadata["source_id"].drop_duplicates()[:3])
    pd.DataFrame({"event_id": [*source_ids, "not-in-the-set"], "origin_time": ""}).to_csv(
        tmp_path / "catalog.csv", index=False
    )
    events = read_catalog(tmp_path / "catalog.csv")
    source = open_source(str(path), config=classifier.config)
    assert source.kind == "seisbench"
    out = tmp_path / "predictions.csv"
    classify_events(
        classifier, events, source, out, stations_out=tmp_path / "st.csv", workers=0, progress=False
    )
    preds = read_predictions(out).set_index("event_id")
    expected = metadata[metadata["source_id"].isin(source_ids)].groupby("source_id").size()
    assert list(preds.loc[source_ids, "n_stations_used"].astype(int)) == list(expected[source_ids])
    assert preds.loc["not-in-the-set", "skip_reasons"] == "no traces with this source_id"
    # Station windows are the adapter's windows (the training path): same probabilities.
    dataset = open_dataset(path).filter(metadata["source_id"].isin(source_ids).to_numpy())
    adapter = WaveformDataAdapter(dataset, config=classifier.config)
    windows = np.stack([adapter.get_waveform(i) for i in range(len(adapter))])
    expected_probs = classifier.predict_proba(windows)
    stations = pd.read_csv(tmp_path / "st.csv", dtype=str, keep_default_na=False).set_index(
        "station_id"
    )
    got = stations.loc[list(adapter.metadata["trace_name"]), PROBS].astype(float).to_numpy()
    np.testing.assert_allclose(got, expected_probs, atol=1e-5)


def test_seisbench_traces_missing_or_bad_are_named(damaged_eqnoise, classifier, tmp_path):
    """A metadata row whose waveform is absent from the HDF5 file, and a trace of a bad shape,
    are named skips of their event (row and stations table); other events are as before."""
    source_ids = damaged_eqnoise["source_ids"]
    missing, bad_shape = damaged_eqnoise["missing"], damaged_eqnoise["bad_shape"]
    pd.DataFrame({"event_id": source_ids, "origin_time": ""}).to_csv(
        tmp_path / "catalog.csv", index=False
    )
    events = read_catalog(tmp_path / "catalog.csv")
    tables = {}
    for name in ("intact", "damaged"):
        source = open_source(str(damaged_eqnoise[name]), config=classifier.config)
        out, stations_out = tmp_path / f"{name}.csv", tmp_path / f"{name}-stations.csv"
        classify_events(classifier, events, source, out, stations_out=stations_out, workers=0,
                        progress=False)  # fmt: skip
        tables[name] = (
            read_predictions(out).set_index("event_id"),
            pd.read_csv(stations_out, dtype=str, keep_default_na=False).set_index("station_id"),
        )
    (intact, _), (preds, stations) = tables["intact"], tables["damaged"]
    for event_id in (source_ids[0], source_ids[3]):
        assert preds.loc[event_id].to_dict() == intact.loc[event_id].to_dict()
    row = preds.loc[source_ids[1]]
    assert (row["n_stations_used"], row["n_stations_skipped"]) == ("1", "1")
    assert f"{missing}: missing waveform" in row["skip_reasons"]
    assert stations.loc[missing, "status"] == "skipped"
    assert stations.loc[missing, "reason"] == "missing waveform"
    assert f"no data/{missing} in waveforms.hdf5" in stations.loc[missing, "detail"]
    row = preds.loc[source_ids[2]]
    assert (row["n_stations_used"], row["n_stations_skipped"]) == ("1", "1")
    assert f"{bad_shape}: bad shape" in row["skip_reasons"]
    assert stations.loc[bad_shape, "reason"] == "bad shape"
    assert "expected 2-D" in stations.loc[bad_shape, "detail"]


def test_stations_skipped_are_those_training_drops(full_run, pnw, classifier):
    """Classification skips exactly the station windows the training adapter drops."""
    adapter = WaveformDataAdapter(open_dataset(pnw, classifier.config), config=classifier.config)
    assert dict(full_run["summary"].skip_counts) == adapter.drop_counts()
    assert full_run["summary"].n_windows == len(adapter)


# --- outputs never alias inputs ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({"out": "catalog.xml"}, r"--out '.*catalog.xml' is --catalog"),
        ({"out": "data/predictions.csv"}, r"--out '.*predictions.csv' sits inside --waveforms"),
        ({"out": "p.csv", "stations_out": "p.csv"}, r"--out '.*p.csv' is --stations-out"),
        ({"out": "p.csv", "quakeml": "catalog.xml"}, r"--quakeml '.*catalog.xml' is --catalog"),
        ({"out": "model/p.csv"}, r"--out '.*p.csv' sits inside --model"),
    ],
)
def test_outputs_that_alias_inputs_are_refused(model_dir, pnw, tmp_path, outputs, message):
    shutil.copy(pnw / "catalog.xml", tmp_path / "catalog.xml")
    (tmp_path / "data").symlink_to(pnw / "waveforms")
    model = shutil.copytree(model_dir, tmp_path / "model")
    before = (tmp_path / "catalog.xml").read_bytes()
    paths = {k: tmp_path / v for k, v in outputs.items()}
    with pytest.raises(ValueError, match=message):
        run_classification(load(model), tmp_path / "catalog.xml", str(tmp_path / "data"),
                           paths.pop("out"), progress=False, model_path=model, **paths)  # fmt: skip
    assert (tmp_path / "catalog.xml").read_bytes() == before


def test_quakeml_in_place_keeps_a_backup(classifier, pnw, tmp_path):
    catalog = tmp_path / "catalog.xml"
    shutil.copy(pnw / "catalog.xml", catalog)
    original = catalog.read_bytes()
    summary = run_classification(classifier, catalog, str(pnw), tmp_path / "p.csv",
                                 quakeml=catalog, in_place=True, progress=False)  # fmt: skip
    assert (tmp_path / "catalog.xml.bak").read_bytes() == original
    rewritten = obspy.read_events(str(catalog))
    assert all(any(classifier.model_id in c.text for c in e.comments) for e in rewritten)
    assert summary.quakeml_counts["kept_typed"] == 48  # the analyst's types stay


# --- one writer per output ---------------------------------------------------------------------
def test_a_second_run_on_the_same_output_stops_at_once(model_dir, pnw, tmp_path):
    import subprocess
    import sys
    import time

    from quake.classify.outputs import lock_path

    out = tmp_path / "p.csv"
    first = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / "classify.py"),
         "--model", str(model_dir), "--catalog", str(pnw / "catalog.xml"), "--waveforms",
         str(pnw), "--out", str(out), "--batch-size", "4", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not lock_path(out).exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lock_path(out).exists(), "the first run never took its lock"
    with pytest.raises(
        ValueError, match=rf"is being written by another quake process \(pid {first.pid} on"
    ):
        run_classification(load(model_dir), pnw / "catalog.xml", str(pnw), out, progress=False)
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert len(read_predictions(out)) == 48 and not lock_path(out).exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(classifier, pnw, tmp_path, caplog):
    import json
    import socket
    import subprocess

    from quake.classify.outputs import lock_path

    gone = subprocess.Popen(["true"])  # a pid that has exited
    gone.wait()
    out = tmp_path / "p.csv"
    lock_path(out).write_text(
        json.dumps({"host": socket.gethostname(), "pid": gone.pid, "started": "x"})
    )
    run_classification(classifier, pnw / "catalog.xml", str(pnw), out, progress=False)
    assert len(read_predictions(out)) == 48 and not lock_path(out).exists()
    assert f"left by process {gone.pid}" in caplog.text


def test_resume_merges_new_rows_between_kept_ones_in_catalog_order(pnw, classifier, tmp_path):
    """Rows are appended at each flush, not kept in memory: a resumed run whose new events lie
    between the kept ones merges them in catalog order at every flush, and ends with the bytes
    of a run never stopped (batch size 1, so no window is scored beside other neighbours)."""
    events = read_catalog(pnw / "catalog.csv", compact=True)
    options = dict(batch_size=1, workers=0, progress=False)
    one_go = tmp_path / "one-go"
    classify_events(classifier, events, open_source(str(pnw)), one_go / "p.csv",
                    stations_out=one_go / "s.csv", **options)  # fmt: skip
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    kept = read_predictions(one_go / "p.csv").iloc[1::3]
    kept.to_csv(resumed / "p.csv", index=False)
    stations = pd.read_csv(one_go / "s.csv", dtype=str, keep_default_na=False)
    stations[stations["event_id"].isin(kept["event_id"])].to_csv(resumed / "s.csv", index=False)
    summary = classify_events(classifier, events, open_source(str(pnw)), resumed / "p.csv",
                              stations_out=resumed / "s.csv", resume=True, flush_every=1,
                              flush_interval_s=0.0, **options)  # fmt: skip
    assert summary.n_resumed == len(kept)
    for name in ("p.csv", "s.csv"):
        assert (resumed / name).read_bytes() == (one_go / name).read_bytes()
