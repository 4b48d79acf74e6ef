"""An SDS archive as unlabelled pretraining data (quake.data.readers.sds): random window crops
of each station-day within a time range, read from real PNSN recordings written into an SDS
tree, and a pretraining run on it."""

from __future__ import annotations

import json

import numpy as np
import obspy
import pytest

from quake.data import PreprocessConfig, WaveformDataAdapter
from quake.data.readers.sds import SdsDataset
from quake.pretrain import load_pretrain_config, pretrain
from quake.pretrain.data import open_unlabelled


@pytest.fixture(scope="module")
def sds(real_data_dir, tmp_path_factory):
    """Five vertical recordings (150 s at 100 Hz) of one unlabelled-pnw event, as SDS day
    files; one of them also on the next day."""
    source = real_data_dir / "unlabelled-pnw" / "waveforms"
    if not source.is_dir():
        pytest.skip(f"{source} not found")
    event = sorted(p for p in source.iterdir() if p.is_dir())[0]
    root = tmp_path_factory.mktemp("sds")
    traces = [obspy.read(str(f))[0] for f in sorted(event.glob("*.mseed"))]
    traces = [t for t in traces if t.stats.sampling_rate == 100.0][:4]
    later = traces[0].copy()
    later.stats.starttime += 86400
    for tr in [*traces, later]:
        s, t = tr.stats, tr.stats.starttime
        folder = root / str(t.year) / s.network / s.station / f"{s.channel}.D"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{s.network}.{s.station}.{s.location}.{s.channel}.D.{t.year}.{t.julday:03d}"
        tr.write(str(folder / name), format="MSEED")
    return root, traces


def test_random_crops_of_each_station_day_within_the_range(sds):
    root, traces = sds
    t0 = min(t.stats.starttime for t in traces)
    config = PreprocessConfig()
    day = obspy.UTCDateTime(t0.date)
    data = SdsDataset(root, config, start=day, end=day + 2 * 86400, windows_per_recording=3)
    meta = data.metadata
    assert len(meta) == 3 * (len(traces) + 1)  # 150 s hold 7 slots of 20.48 s: 3 crops each
    assert meta["source_id"].nunique() == len(traces) + 1  # station-days
    for trace in traces:
        station = f"{trace.stats.network}.{trace.stats.station}.{trace.stats.location}"
        rows = meta[meta["source_id"] == f"{station}/{t0.year}.{t0.julday:03d}"]
        starts = [obspy.UTCDateTime(t) for t in rows["trace_start_time"]]
        offsets = [(s - trace.stats.starttime) / config.window_s for s in starts]
        assert len(set(offsets)) == 3 and all(abs(o - round(o)) < 1e-6 for o in offsets)
        assert all(s + config.window_s <= trace.stats.endtime + 0.01 for s in starts)
    # a crop holds the recorded samples of its time
    adapter = WaveformDataAdapter(data, config=config)
    k = int(np.flatnonzero(adapter.metadata["trace_name"] == meta["trace_name"].iloc[0])[0])
    window = adapter.get_waveform(k)
    original = traces[0].copy().trim(obspy.UTCDateTime(meta["trace_start_time"].iloc[0]))
    np.testing.assert_allclose(window[0, :500], original.data[:500], rtol=1e-5, atol=1e-3)
    same = SdsDataset(root, config, start=day, end=day + 2 * 86400, windows_per_recording=3)
    other = SdsDataset(root, config, start=day, end=day + 2 * 86400, windows_per_recording=3,
                       seed=1)  # fmt: skip
    assert same.metadata["trace_start_time"].tolist() == meta["trace_start_time"].tolist()
    assert other.metadata["trace_start_time"].tolist() != meta["trace_start_time"].tolist()
    # the range clips a day: crops start at or after `start` and the next day is left out
    late = SdsDataset(root, config, start=t0 + 60, end=day + 86400, windows_per_recording=None)
    assert len(late.metadata) == len(traces) * 4  # 90 s left: 4 whole windows each
    assert all(obspy.UTCDateTime(t) >= t0 + 60 for t in late.metadata["trace_start_time"])


def test_bad_ranges_are_refused_naming_them(sds, tmp_path):
    root, _ = sds
    with pytest.raises(ValueError, match="end 2001-01-01T00:00:00.000000Z is not after start"):
        SdsDataset(root, start="2001-01-02", end="2001-01-01")
    with pytest.raises(ValueError, match=r"no SDS day file \(D type\) in .* between"):
        SdsDataset(root, start="1990-01-01", end="1990-01-03")
    with pytest.raises(ValueError, match="start='yesterday' is not a time"):
        SdsDataset(root, start="yesterday", end="2001-01-01")
    with pytest.raises(ValueError, match="is an SDS archive .* expected a time range"):
        open_unlabelled(root, PreprocessConfig())
    with pytest.raises(ValueError, match="data.start / data.end"):
        load_pretrain_config(overrides={"data.paths": [str(root)], "data.start": "2001-01-01"})


def test_pretraining_reads_an_sds_archive(sds, tmp_path):
    root, traces = sds
    day = obspy.UTCDateTime(traces[0].stats.starttime.date)
    config = load_pretrain_config(
        overrides={
            "data.paths": [str(root)],
            "data.start": str(day),
            "data.end": str(day + 2 * 86400),
            "data.windows_per_recording": 4,
            "data.val_fraction": 0.2,
            "data.preprocess": {"window_s": 5.12, "stft_nperseg": 32, "stft_hop": 32},
            "model.depth": 1,
            "optim.epochs": 1,
            "optim.batch_size": 4,
            "run.out": str(tmp_path / "run"),
            "run.device": "cpu",
            "run.quiet": True,
        }
    )
    result = pretrain(config)
    source = result.summary["data"]["sources"][0]
    assert source["kind"] == "sds" and source["windows"] == 4 * (len(traces) + 1)
    info = json.loads((tmp_path / "run" / "pretrain.json").read_text())
    assert info["config"]["data"]["start"] == str(day)
    assert np.isfinite(info["progress"]["final_loss"])
