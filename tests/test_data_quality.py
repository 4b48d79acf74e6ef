"""Quality control on real recordings with planted faults (eqnoise-3c and pnw-eqex; skipped
where the real data is absent).

Each fault is planted in a real three-component earthquake record written as miniSEED, as a
station would deliver it; the test asserts the flag's name and what the policy did with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import obspy
import pytest
import torch
from obspy import Stream, Trace, UTCDateTime

from quake.data import (
    PreprocessConfig,
    SeisBenchWriter,
    SkipTrace,
    WaveformDataAdapter,
    open_dataset,
    prepare_window,
    spectrogram_batch,
    window_from_stream,
)
from quake.data.quality import QualityPolicy, dropout_runs, inspect_channel

T0 = UTCDateTime("2020-01-01T00:00:00")
P_S = 5.0  # eqnoise-3c windows start 5 s before P (trace_p_arrival_sample = 500)
CFG = PreprocessConfig()
WINDOW_START_S = P_S - CFG.pre_arrival_s  # the model's window on the record's clock


@pytest.fixture(scope="module")
def record(real_data_dir) -> np.ndarray:
    """A 29 s three-component earthquake record (Z, N, E at 100 Hz), in integer counts."""
    path = real_data_dir / "eqnoise-3c"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    dataset = open_dataset(path)
    meta = dataset.metadata
    rows = np.flatnonzero(
        (meta["source_type"] == "earthquake").to_numpy()
        & (meta["trace_components"].astype(str) == "ZNE").to_numpy()
    )
    data, _ = dataset.get_sample(int(rows[0]))
    counts = np.round(data / np.abs(data).max() * 2e5)  # a well-recorded event, far from clipping
    assert not any(inspect_channel(c).spikes or inspect_channel(c).clipped for c in counts)
    return counts


def _stream(data: np.ndarray, channels: str = "ZNE", rate: float = 100.0) -> Stream:
    return Stream(
        [
            Trace(
                np.asarray(data[i], dtype=np.int32),
                header={
                    "network": "XX",
                    "station": "STA",
                    "channel": "HH" + c,
                    "sampling_rate": rate,
                    "starttime": T0,
                },
            )
            for i, c in enumerate(channels)
        ]
    )


def _window(stream: Stream, config: PreprocessConfig = CFG):
    return window_from_stream(stream, config, p_time=T0 + P_S)


def _classifier():
    from quake.deploy.ensemble import EventClassifier
    from quake.models import HybridViT

    torch.manual_seed(0)
    model = HybridViT(
        depth=1,
        num_classes=2,
        img_size=CFG.spectrogram_shape[1:],
        class_names=["earthquake", "explosion"],
    )
    return EventClassifier([model.eval()], CFG)


def _spectrogram(window: np.ndarray) -> torch.Tensor:
    return spectrogram_batch(torch.from_numpy(window[None]), CFG)[0]


# --- spikes ---------------------------------------------------------------------------------------
def test_a_glitch_is_repaired_to_its_clean_twin(record):
    clean, clean_quality = _window(_stream(record))
    assert clean_quality.flags() == [] and clean_quality.describe() == ""
    glitched = record.copy()
    glitch = int((P_S + 10.0) * 100)  # one 2^23-count sample 10 s after P
    glitched[0, glitch] = 2**23
    window, quality = _window(_stream(glitched))
    assert quality.flags() == ["spike"]
    assert quality.spikes == [("Z", pytest.approx(10.0 + CFG.pre_arrival_s))]
    assert quality.describe() == "spike repaired at 12.0 s (Z)"
    # the repaired window's model input is its clean twin's, up to one interpolated sample
    repaired = (_spectrogram(window) - _spectrogram(clean)).abs()
    assert repaired.max() < 0.1 and repaired.mean() < 1e-3
    kept, _ = _window(_stream(glitched), CFG.replace(quality={"spikes": "use"}))
    used = (_spectrogram(kept) - _spectrogram(clean)).abs()  # what the repair protects from
    assert used.max() > 1.0 and used.mean() > 0.1
    classifier = _classifier()
    probs = classifier.predict_proba(np.stack([clean, window]).astype(np.float32))
    assert np.abs(probs[1] - probs[0]).max() < 0.05
    with pytest.raises(SkipTrace, match=r"^spike: spike found at 12\.0 s \(Z\)$"):
        _window(_stream(glitched), CFG.replace(quality={"spikes": "skip"}))


def test_the_same_glitch_in_an_hdf5_set_is_found_before_resampling(record, tmp_path):
    """At 50 Hz the glitch must be found before resampling: the anti-alias filter would spread it
    over dozens of samples at 100 Hz, where it no longer looks isolated."""
    slow = record[:, ::2].copy()
    slow[1, 1000] = -(2**23)  # N, 20 s in
    with SeisBenchWriter(tmp_path / "set", sampling_rate_hz=50.0) as writer:
        writer.add(
            "glitch",
            slow,
            source_id="ev",
            source_type="earthquake",
            trace_p_arrival_sample=P_S * 50,
        )
    adapter = WaveformDataAdapter(open_dataset(tmp_path / "set"))
    assert adapter.quality_counts == {"spike": 1, "resampled": 1}
    assert adapter.metadata["trace_quality"][0] == (
        "spike repaired at 17.0 s (N); resampled from 50 Hz"
    )


# --- clipping ---------------------------------------------------------------------------------------
def test_a_record_clipped_by_its_digitizer_is_skipped(record):
    loud = record / np.abs(record).max() * 3 * 2**23
    clipped = np.clip(loud, -(2**23), 2**23 - 1)
    with pytest.raises(SkipTrace, match=r"^clipping: [ZNE] at its extreme value from") as skip:
        _window(_stream(clipped))
    assert skip.value.reason == "clipping"
    _, quality = _window(_stream(clipped), CFG.replace(quality={"clipping": "use"}))
    assert "clipping" in quality.flags() and quality.describe().startswith("clipped at")
    # a loud record that stays below the limit is not clipped
    assert _window(_stream(np.round(loud / 4)))[1].flags() == []


def test_clipping_of_a_12_bit_station_in_pnw_is_found(real_data_dir):
    """UW.TDH, event uw61699342: an analogue short-period station saturating at -2048/+2047."""
    path = real_data_dir / "pnw-eqex" / "waveforms" / "uw61699342" / "UW.TDH..EHZ.mseed"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    x = obspy.read(str(path))[0].data.astype(float)
    findings = inspect_channel(x)
    assert findings.clipped and not findings.spikes
    assert {x[a] for a, _ in findings.clipped} == {-2048.0, 2047.0}


# --- files truncated, gaps, partial windows, dead channels ------------------------------------------------
def _write_event(folder: Path, stream: Stream) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for tr in stream:
        tr.write(str(folder / f"{tr.id}.mseed"), format="MSEED", reclen=512, encoding="STEIM2")


def test_a_truncated_file_loses_its_component_by_name(record, tmp_path):
    from quake.data.sources import EventFolderSource, EventRequest

    _write_event(tmp_path / "ev", _stream(record))
    east = tmp_path / "ev" / "XX.STA..HHE.mseed"
    data = east.read_bytes()
    east.write_bytes(data[: int(len(data) * 0.4) // 512 * 512])  # cut at 40 %, on a record
    traces = EventFolderSource(tmp_path).fetch(EventRequest("ev", T0))
    (station,) = traces.stations
    window, quality = window_from_stream(station.stream, CFG, p_time=T0 + P_S)
    assert quality.missing == {"E": "truncated"} and quality.components == "ZN"
    assert "missing E truncated, filled with zeros" in quality.describe()
    assert not window[2].any()
    copy_z = CFG.replace(missing_component="copy_z")
    window, quality = window_from_stream(station.stream, copy_z, p_time=T0 + P_S)
    np.testing.assert_array_equal(window[2], window[0])
    with pytest.raises(SkipTrace, match=r"^missing component: E truncated$"):
        window_from_stream(
            station.stream, CFG.replace(quality={"missing_components": "skip"}), p_time=T0 + P_S
        )


def test_an_8_s_gap_is_named_and_skips_the_window_by_default(record):
    stream = _stream(record)
    gappy = Stream()
    for tr in stream:  # 8 s missing, 4 s after P, on every component
        gappy += tr.slice(T0, T0 + P_S + 4.0)
        gappy += tr.slice(T0 + P_S + 12.0, tr.stats.endtime)
    with pytest.raises(SkipTrace, match=r"^gap: 61% of the window backed by data") as skip:
        _window(gappy)
    assert "longest gap 8.0 s" in str(skip.value)
    loose = CFG.replace(quality={"min_coverage": 0.5})
    _, quality = _window(gappy, loose)
    assert "gap" in quality.flags() and quality.coverage == pytest.approx(
        1 - 7.99 / 20.48, abs=0.01
    )
    assert quality.describe().startswith("gap 8.0 s at 6.0 s interpolated (Z)")


def test_a_window_59_percent_covered_is_named_or_skipped(record):
    stream = _stream(record)
    # P so late in the record that only 59 % of the window lies inside it
    p_time = T0 + 29.0 - 0.59 * CFG.window_s + CFG.pre_arrival_s
    with pytest.raises(SkipTrace, match=r"^too short: 59% of the window backed by data"):
        window_from_stream(stream, CFG, p_time=p_time)
    _, quality = window_from_stream(
        stream, CFG.replace(quality={"min_coverage": 0.5}), p_time=p_time
    )
    assert quality.flags() == ["partial window"]
    assert quality.describe() == "window 59% covered, 8.4 s zero-padded"


def test_a_dead_channel_and_an_unknown_channel_letter_are_named(record):
    dead = record.copy()
    dead[1] = 812
    stream = _stream(dead)
    stream += Trace(
        np.zeros(2900, dtype=np.int32),
        header={
            "network": "XX",
            "station": "STA",
            "channel": "HHX",
            "sampling_rate": 100.0,
            "starttime": T0,
        },
    )
    window, quality = _window(stream)
    assert quality.dead == "N" and quality.flags() == ["dead channel"]
    assert quality.ignored_channels == ["HHX"]
    assert "dead channel N" in quality.describe() and "ignored channel HHX" in quality.describe()
    assert window[0].any() and window[2].any()  # Z and E are used, not dropped with HHX


# --- dropouts: constant stretches written into the file ------------------------------------------
LATE_START = "phasenet_PG_AR_2004101107051561_noise"  # its recording starts 3.33 s in


def _real_item(real_data_dir: Path, name: str) -> tuple[np.ndarray, dict]:
    path = real_data_dir / "eqnoise-3c"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    dataset = open_dataset(path)
    return dataset.get_sample(dataset.metadata["trace_name"].tolist().index(name))


def test_a_window_without_pick_starts_where_the_recording_does(real_data_dir):
    """The noise window of PG.AR begins with 3.33 s of zeros (held by the file's writer before
    the recording started). A window without an anchor used to start at sample 0: a flat
    stretch and then noise, which a spectrogram model reads as an onset."""
    data, meta = _real_item(real_data_dir, LATE_START)
    first = int(np.flatnonzero((data != data[:, :1]).any(axis=0))[0])
    assert 300 < first < 400 and not data[:, :first].any()
    window, quality = prepare_window(data, meta, CFG)
    np.testing.assert_array_equal(window, data[:, first : first + CFG.window_samples])
    assert quality.flags() == ["dropout"] and quality.coverage == 1.0
    assert quality.describe() == (
        f"window starts after {first / 100:.1f} s of constant samples (Z, N, E)"
    )
    at_start, _ = prepare_window(data, meta, CFG.replace(anchor="start"))
    np.testing.assert_array_equal(at_start, window)  # "the trace start" is where it records
    offset, _ = prepare_window(data, meta, CFG.replace(anchor="offset", offset_s=1.0))
    np.testing.assert_array_equal(offset, data[:, 100 : 100 + CFG.window_samples])  # as asked


SHORT_AFTER_DROPOUT = "phasenet_PG_AR_1997080110141265_noise"  # records from 10.8 s of 29 s


def test_a_window_without_pick_is_padded_at_its_end_not_before_the_recording(real_data_dir):
    """PG.AR's 1997 noise window records only its last 18.2 s: fewer than a window. Moving the
    window back to end with the recording put 2.3 s of the writer's fill before the noise, an
    onset at about the place a P pick puts one (the file holds a constant before it); the
    window now starts where the recording does, and the 2.3 s it lacks are padding at its end."""
    data, meta = _real_item(real_data_dir, SHORT_AFTER_DROPOUT)
    first = int(np.flatnonzero((data != data[:, :1]).any(axis=0))[0])
    recorded = data.shape[1] - first
    assert 1000 < first and recorded < CFG.window_samples
    window, quality = prepare_window(data, meta, CFG)
    np.testing.assert_array_equal(window[:, :recorded], data[:, first:])
    assert not window[:, recorded:].any()
    assert (window[:, :10] != 0).all()  # no flat stretch before the noise
    assert quality.coverage == pytest.approx(recorded / CFG.window_samples, abs=0.005)
    assert set(quality.flags()) == {"dropout", "partial window"}
    assert f"{(CFG.window_samples - recorded) / 100:.1f} s zero-padded" in quality.describe()


def test_the_adapter_reads_a_dropout_item_the_same_way_every_epoch(real_data_dir, tmp_path):
    data, meta = _real_item(real_data_dir, LATE_START)
    with SeisBenchWriter(tmp_path / "set", sampling_rate_hz=100.0) as writer:
        writer.add("late", data, source_id="ev1", source_type="noise")
    adapter = WaveformDataAdapter(open_dataset(tmp_path / "set"), config=CFG)
    assert adapter.quality_counts == {"dropout": 1}
    expected, _ = prepare_window(data, meta, CFG)
    np.testing.assert_array_equal(adapter.get_waveform(0), expected)  # read again, not cached
    assert adapter.get_waveform(0)[:, :10].any()


def test_a_dropout_inside_an_anchored_window_is_named_and_counted(record):
    held = record.copy()
    start = int((P_S + 4.0) * 100)
    held[:, start : start + 100] = held[:, start - 1 : start]  # the last value held for 1 s
    window, quality = _window(_stream(held))
    clean, _ = _window(_stream(record))
    offset = int(WINDOW_START_S * 100)
    np.testing.assert_array_equal(window[:, : start - offset], clean[:, : start - offset])
    assert quality.flags() == ["dropout"]
    assert quality.describe() == "constant 1.0 s at 6.0 s (Z, N, E); window 95% covered"
    assert quality.coverage == pytest.approx(1 - 1.0 / CFG.window_s, abs=1e-3)
    long = record.copy()
    long[:, start : start + 600] = 0
    with pytest.raises(SkipTrace, match=r"^dropout: 71% of the window backed by data") as skip:
        _window(_stream(long))
    assert "longest constant stretch 6.0 s" in str(skip.value)


def test_what_is_not_a_dropout(record):
    live = record[0].astype(np.float64)
    assert dropout_runs(live, 100.0) == []
    short = live.copy()
    short[1000:1049] = 0.0  # 0.49 s: below DROPOUT_MIN_S
    assert dropout_runs(short, 100.0) == []
    short[1000:1050] = 0.0
    assert dropout_runs(short, 100.0) == [(1000, 1050)]
    assert dropout_runs(np.full(2900, 7.0), 100.0) == []  # a dead channel is named as such
    assert dropout_runs(short, 100.0, clipped=[(990, 1060)]) == []  # clipping is clipping
    slow = live[::50]  # 2 Hz: 10 samples (5 s) at the least
    slow[20:29] = 0.0
    assert dropout_runs(slow, 2.0) == []
    slow[20:30] = 0.0
    assert dropout_runs(slow, 2.0) == [(20, 30)]


def test_a_quiet_station_recorded_at_its_resolution_has_no_dropout(pnw):
    """UW.CDF (pnw-eqex) records +-1 count around 817: most samples repeat the last one, and
    runs of 0.5 s and longer are its noise, not a fill."""
    trace = obspy.read(str(pnw / "waveforms" / "uw61788522" / "UW.CDF..EHZ.mseed"))[0]
    x = trace.data.astype(np.float64)
    repeats = np.count_nonzero(x[1:] == x[:-1]) / (x.size - 1)
    assert repeats > 0.8 and np.ptp(x) <= 4
    assert dropout_runs(x, trace.stats.sampling_rate) == []
    noisy = x + np.random.default_rng(0).normal(size=x.size)  # the same record, not quantized
    noisy[5000:5100] = 0.0
    assert dropout_runs(noisy, trace.stats.sampling_rate) == [(5000, 5100)]


def test_a_gap_zero_filled_by_the_merge_is_not_also_a_dropout(record):
    gappy = Stream()
    for tr in _stream(record):  # 3 s missing, 4 s after P
        gappy += tr.slice(T0, T0 + P_S + 4.0)
        gappy += tr.slice(T0 + P_S + 7.0, tr.stats.endtime)
    _, quality = _window(gappy, CFG.replace(gap_fill="zeros"))
    assert quality.flags() == ["gap"] and quality.dropouts == []


def test_conflicting_overlaps_are_flagged(record):
    stream = _stream(record[:1], "Z")
    tr = stream[0]
    first = tr.slice(T0, T0 + 15.0)
    second = tr.slice(T0 + 14.0, tr.stats.endtime)
    second.data = second.data.copy()
    second.data[:50] += 1000  # the repeated second disagrees
    _, quality = _window(Stream([first, second]))
    ((comp, start, length, conflicting),) = quality.overlaps
    assert comp == "Z" and conflicting and length == pytest.approx(1.01, abs=0.02)
    assert "1 with conflicting samples (first kept)" in quality.describe()


# --- HDF5 sets ----------------------------------------------------------------------------------------
def test_a_trace_with_a_wrong_dtype_is_a_named_skip(record, tmp_path):
    with SeisBenchWriter(tmp_path / "set", sampling_rate_hz=100.0) as writer:
        for i in range(3):
            writer.add(
                f"t{i}",
                record,
                source_id=f"ev{i}",
                source_type="earthquake",
                trace_p_arrival_sample=500,
            )
    with h5py.File(tmp_path / "set" / "waveforms.hdf5", "a") as f:
        del f["data/t1"]
        f["data/t1"] = np.full((3, 2900), "x", dtype="S1")
    adapter = WaveformDataAdapter(open_dataset(tmp_path / "set"))
    assert len(adapter) == 2
    ((item, reason),) = adapter.dropped
    assert item == "t1" and reason.startswith("bad dtype: t1: stored with dtype |S1")


# --- the policy is saved with the model -------------------------------------------------------------
def test_quality_policy_round_trips_and_validates():
    cfg = PreprocessConfig(quality={"spikes": "skip", "min_coverage": 0.9})
    again = PreprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.quality == QualityPolicy(spikes="skip", min_coverage=0.9)
    assert PreprocessConfig.from_dict({}).quality == QualityPolicy()  # models saved before it
    with pytest.raises(
        ValueError, match=r"quality.spikes must be one of \['use', 'repair', 'skip'\], got 'fix'"
    ):
        QualityPolicy(spikes="fix")
    with pytest.raises(
        ValueError, match=r"quality.min_coverage must be a number in \(0, 1\], got 1.5"
    ):
        PreprocessConfig(quality={"min_coverage": 1.5})
    with pytest.raises(ValueError, match=r"unknown quality policy keys \['spike'\]"):
        PreprocessConfig(quality={"spike": "use"})


def test_the_benchmarks_switch_turns_every_channel_check_off_and_back_on(record, bench_helper):
    """bench_classify / bench_data measure the checks' cost with ``quality_checks_off``: inside
    it a glitch and a dropout go unnoticed, after it both are found again."""
    quality_checks_off = bench_helper("quality_checks").quality_checks_off

    faulty = record.copy()
    faulty[0, int((P_S + 10.0) * 100)] = 2**23
    start = int((P_S + 4.0) * 100)
    faulty[:, start : start + 100] = 0
    with quality_checks_off():
        _, quiet = _window(_stream(faulty))
    _, found = _window(_stream(faulty))
    assert quiet.flags() == []
    assert found.flags() == ["spike", "dropout"]
