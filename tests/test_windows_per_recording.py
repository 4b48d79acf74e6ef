"""Several consecutive windows per recording (``windows_per_recording``) for signals that outlast
one window: training's items, classification's pooling per station, on real recordings."""

from __future__ import annotations

import json

import numpy as np
import obspy
import pandas as pd
import pytest
import torch
from tiny_run import tiny_run_config

from quake.data import PreprocessConfig, WaveformDataAdapter, open_dataset, window_from_stream
from quake.deploy import EventClassifier, load
from quake.models import HybridViT
from quake.training import load_config, train


@pytest.fixture(scope="module")
def esec_config(real_data_dir):
    path = real_data_dir / "esec-surface"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    config = load_config(overrides={"data.path": str(path)})
    return path, config.data.preprocess_config(), config.data.labels()


def test_a_recordings_windows_follow_each_other_as_training_items(esec_config):
    """Two windows per recording are the two halves of one window twice as long, cut by the
    same reading, resampling and checks; the second is named after the first."""
    path, preprocess, labels = esec_config
    dataset = open_dataset(path, preprocess, labels).filter(np.arange(12))
    long = WaveformDataAdapter(dataset, config=preprocess.replace(window_s=2 * preprocess.window_s))
    two = WaveformDataAdapter(dataset, config=preprocess.replace(windows_per_recording=2))
    assert len(two) == 2 * len(long) == 24
    halves = two.get_waveforms(np.arange(len(two)))
    np.testing.assert_array_equal(
        np.concatenate([halves[0::2], halves[1::2]], axis=2), long.get_waveforms(np.arange(12))
    )
    meta = two.metadata
    assert meta["trace_window"].tolist() == [0, 1] * 12
    names = long.metadata["trace_name"].tolist()
    assert meta["trace_name"].tolist() == [n for name in names for n in (name, f"{name}_w1")]
    assert (meta["source_id"].to_numpy()[0::2] == meta["source_id"].to_numpy()[1::2]).all()
    assert (two.labels[0::2] == two.labels[1::2]).all()


def test_a_window_past_the_recording_is_dropped_alone(esec_config):
    """Of eight 20.48 s windows from 2 s before the catalogue time, those past a recording's end
    are dropped as too short, by name, and the recording keeps the windows before them (the
    recordings of event 213 end 90-150 s after it)."""
    path, preprocess, labels = esec_config
    dataset = open_dataset(path, preprocess, labels).filter(np.arange(4))
    eight = WaveformDataAdapter(dataset, config=preprocess.replace(windows_per_recording=8))
    meta = eight.metadata
    recording = meta["trace_name"].str.replace(r"_w\d+$", "", regex=True)
    kept = meta.groupby(recording)["trace_window"].apply(list)
    assert len(kept) == 4
    assert all(windows == list(range(len(windows))) for windows in kept)  # a prefix
    # the windows at least min_coverage inside the recording of some component (one that ends
    # earlier is a truncated component, filled as a missing one), from the files' own times
    origin = obspy.UTCDateTime(meta["source_origin_time"].iloc[0])
    for name, windows in kept.items():
        event, station = name.split(".", 1)
        files = (path / "waveforms" / event).glob(f"{station}?.mseed")
        end = max(tr.stats.endtime for f in files for tr in obspy.read(str(f), headonly=True))
        starts = [origin - preprocess.pre_arrival_s + k * preprocess.window_s for k in range(8)]
        inside = [
            (end - t) / preprocess.window_s >= preprocess.quality.min_coverage for t in starts
        ]
        assert len(windows) == sum(inside), (name, windows, end)
    assert any(len(windows) < 8 for windows in kept)
    assert {name for name, _ in eight.dropped} == {
        f"{name}_w{k}" for name, windows in kept.items() for k in range(len(windows), 8)
    }
    assert all(reason.startswith("too short") for _, reason in eight.dropped)


def test_classification_pools_a_stations_windows(real_data_dir):
    """A station's probabilities are the normalised geometric mean of its windows', the windows
    being the halves of one twice as long (cut apart from the code under test)."""
    folder = real_data_dir / "esec-surface" / "waveforms" / "167"
    catalog = pd.read_csv(real_data_dir / "esec-surface" / "catalog.csv")
    origin = obspy.UTCDateTime(catalog.set_index("event_id").loc[167, "time"])
    stream = obspy.read(str(folder / "UW.CINE..HH?.mseed"))
    config = PreprocessConfig(windows_per_recording=2)
    torch.manual_seed(0)
    model = HybridViT(img_size=config.spectrogram_shape[1:], num_classes=3, depth=1,
                      class_names=["earthquake", "explosion", "noise"])  # fmt: skip
    clf = EventClassifier([model], config)
    result = clf.classify(stream, origin_time=origin)
    row = result.stations.query("status == 'used'").iloc[0]
    got = row[[f"prob_{c}" for c in clf.class_names]].to_numpy(dtype=float)

    long, _ = window_from_stream(stream, config.replace(window_s=2 * config.window_s,
                                                        windows_per_recording=1),
                                 origin_time=origin)  # fmt: skip
    halves = np.stack([long[:, : config.window_samples], long[:, config.window_samples :]])
    per_window = clf.predict_proba(halves)
    pooled = np.exp(np.log(per_window + 1e-6).mean(axis=0))
    np.testing.assert_allclose(got, pooled / pooled.sum(), atol=1e-5)
    assert not np.allclose(per_window[0], per_window[1], atol=1e-4)  # two windows did count


@pytest.mark.slow
def test_a_run_keeps_a_recordings_windows_together_and_saves_the_count(pnw, tmp_path):
    run = train(tiny_run_config(pnw, tmp_path / "run",
                                **{"data.preprocess.windows_per_recording": 2})).run_dir  # fmt: skip
    items = pd.read_csv(run / "items.csv")
    recordings = items["trace_name"].str.replace(r"_w1$", "", regex=True)
    assert (items.groupby(recordings).size() <= 2).all() and (
        items["trace_name"].str.endswith("_w1")
    ).any()
    place = {}
    for fold in json.loads((run / "fold_indices.json").read_text())["folds"]:
        for part in ("train", "val", "test"):
            for i in fold[part]:
                place[(fold["fold"], recordings[i])] = place.get(
                    (fold["fold"], recordings[i]), set()
                ) | {part}
    assert all(len(parts) == 1 for parts in place.values())  # never split across parts
    assert load(run / "model").config.windows_per_recording == 2
