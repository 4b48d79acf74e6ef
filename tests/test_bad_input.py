"""One bad station never stops a batch: real pnw-eqex recordings with one station damaged are
classified, the damaged station is a named skip in ``--stations-out`` and every other row is
what the same catalog gives without the damage."""

from __future__ import annotations

import shutil

import numpy as np
import obspy
import pandas as pd
import pytest

from quake.classify.run import run_classification
from quake.classify.tables import read_predictions
from quake.data import PreprocessConfig, window_from_array
from quake.data.transforms import SkipTrace, overflow_description
from quake.deploy import load

EVENTS = ["uw61362132", "uw61511322", "uw61521381"]
DAMAGED_EVENT, DAMAGED_STATION = "uw61362132", "UW.BRAN."


def copy_events(pnw, root):
    """A catalog + waveform folder of three real events."""
    root.mkdir(parents=True, exist_ok=True)
    catalog = pd.read_csv(pnw / "catalog.csv")
    catalog[catalog["event_id"].isin(EVENTS)].to_csv(root / "catalog.csv", index=False)
    for event in EVENTS:
        shutil.copytree(pnw / "waveforms" / event, root / "waveforms" / event)
    return root


def scale_station(root, scale: float, dtype) -> None:
    """Rewrite every file of the damaged station with its samples times ``scale``."""
    for path in (root / "waveforms" / DAMAGED_EVENT).glob(f"{DAMAGED_STATION}*.mseed"):
        stream = obspy.read(str(path))
        for trace in stream:
            trace.data = trace.data.astype(np.float64) * scale
            trace.data = trace.data.astype(dtype)
        encoding = "FLOAT64" if dtype == np.float64 else "FLOAT32"
        stream.write(str(path), format="MSEED", encoding=encoding)


def classify(model_dir, root, out_dir):
    out_dir.mkdir()
    run_classification(load(model_dir), root / "catalog.csv", str(root / "waveforms"),
                       out_dir / "p.csv", stations_out=out_dir / "s.csv", workers=0,
                       progress=False)  # fmt: skip
    stations = pd.read_csv(out_dir / "s.csv", dtype=str, keep_default_na=False)
    return read_predictions(out_dir / "p.csv").set_index("event_id"), stations


@pytest.fixture(scope="module")
def clean(model_dir, pnw, tmp_path_factory):
    root = copy_events(pnw, tmp_path_factory.mktemp("clean"))
    return classify(model_dir, root, tmp_path_factory.mktemp("clean-out") / "out")


@pytest.mark.parametrize(
    "scale, dtype",
    [(1e300, np.float64), (3e37 / 2e4, np.float32)],
    ids=["beyond-float32", "overflows-the-z-score"],
)
def test_an_overflowing_station_is_a_named_skip_and_the_batch_goes_on(
    model_dir, pnw, tmp_path, clean, scale, dtype
):
    root = copy_events(pnw, tmp_path / "data")
    scale_station(root, scale, dtype)
    predictions, stations = classify(model_dir, root, tmp_path / "out")
    clean_predictions, clean_stations = clean

    row = stations[(stations["event_id"] == DAMAGED_EVENT)
                   & (stations["station_id"] == DAMAGED_STATION)].iloc[0]  # fmt: skip
    assert row["status"] == "skipped" and row["reason"] == "overflow", row.to_dict()
    assert "overflow float32" in row["detail"]
    # the event goes on with its other stations, and the other events are untouched
    assert predictions.loc[DAMAGED_EVENT, "predicted_class"] != ""
    assert "overflow" in predictions.loc[DAMAGED_EVENT, "skip_reasons"]
    others = [e for e in EVENTS if e != DAMAGED_EVENT]
    pd.testing.assert_frame_equal(predictions.loc[others], clean_predictions.loc[others])
    keep = ~((stations["event_id"] == DAMAGED_EVENT)
             & (stations["station_id"] == DAMAGED_STATION))  # fmt: skip
    clean_keep = ~((clean_stations["event_id"] == DAMAGED_EVENT)
                   & (clean_stations["station_id"] == DAMAGED_STATION))  # fmt: skip
    mine = stations[keep & (stations["event_id"] != DAMAGED_EVENT)].reset_index(drop=True)
    theirs = clean_stations[clean_keep & (clean_stations["event_id"] != DAMAGED_EVENT)]
    pd.testing.assert_frame_equal(mine, theirs.reset_index(drop=True))


def test_overflow_is_found_per_channel_and_an_ordinary_window_passes():
    config = PreprocessConfig()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, config.window_samples)).astype(np.float32) * 1e4
    assert overflow_description(x) == ""
    window, _ = window_from_array(x, config)
    assert window.shape == (3, config.window_samples)
    x[1] *= np.float32(3e33)  # finite in float32, its squares are not
    assert overflow_description(x).startswith("N: samples up to")
    with pytest.raises(SkipTrace, match="overflow: N: samples up to .* overflow float32"):
        window_from_array(x, config)


# --- a malformed origin time in a catalog: that event is skipped, named, the batch goes on ------
BAD_TIMES = {"uw61511322": "2018-13-45T99:00:00", "uw61521381": "not a time"}


def catalog_with_bad_times(pnw, root):
    """pnw-eqex's catalog.csv with two origin times that are no date-time."""
    root.mkdir(parents=True, exist_ok=True)
    catalog = pd.read_csv(pnw / "catalog.csv", dtype=str, keep_default_na=False)
    for event_id, value in BAD_TIMES.items():
        catalog.loc[catalog["event_id"] == event_id, "time"] = value
    catalog.to_csv(root / "catalog.csv", index=False)
    return root / "catalog.csv"


def test_a_bad_origin_time_skips_its_event_and_names_it(model_dir, pnw, tmp_path, caplog):
    classifier = load(model_dir)
    for name, catalog in [("clean", pnw / "catalog.csv"),
                          ("bad", catalog_with_bad_times(pnw, tmp_path / "data"))]:  # fmt: skip
        summary = run_classification(classifier, catalog, str(pnw), tmp_path / f"{name}.csv",
                                     workers=0, progress=False)  # fmt: skip
    clean = read_predictions(tmp_path / "clean.csv")
    bad = read_predictions(tmp_path / "bad.csv")
    assert len(bad) == 48 and list(bad["event_id"]) == list(clean["event_id"])  # catalog order
    bad, clean = bad.set_index("event_id"), clean.set_index("event_id")
    for event_id, value in BAD_TIMES.items():
        assert bad.loc[event_id, "predicted_class"] == ""
        assert bad.loc[event_id, "skip_reasons"] == f"bad origin time: {value!r}"
        assert f"{event_id} (bad origin time: {value!r})" in caplog.text  # each one named
    others = [e for e in clean.index if e not in BAD_TIMES]
    pd.testing.assert_frame_equal(bad.loc[others], clean.loc[others])
    assert summary.skip_counts["bad origin time"] == 2
    assert summary.n_unclassified == 2 + int((clean["predicted_class"] == "").sum())


def test_a_bad_origin_time_is_a_counted_skip_in_a_training_catalog(pnw, tmp_path):
    from quake.data import open_dataset

    catalog_with_bad_times(pnw, tmp_path)
    (tmp_path / "waveforms").symlink_to(pnw / "waveforms")
    dataset = open_dataset(tmp_path)
    skipped = dict(dataset.skipped)
    for event_id, value in BAD_TIMES.items():
        assert skipped[event_id] == f"bad origin time: {value!r}"
        assert event_id not in set(dataset.metadata["source_id"])
    assert (
        len(set(dataset.metadata["source_id"]))
        == len(set(open_dataset(pnw).metadata["source_id"])) - 2
    )
