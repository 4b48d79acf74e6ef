"""Continuous annotation (:mod:`quake.annotate`): sliding windows over real recordings,
spectrograms cut from one STFT against the per-window path, skips and the probability Stream."""

from __future__ import annotations

import io

import numpy as np
import obspy
import pandas as pd
import pytest
import torch

from quake.annotate import annotate_station, annotate_stream, channel_code, default_stride_s
from quake.annotate.engine import stride_samples
from quake.annotate.spectrogram import RecordingSpectrogram, shared_stft_applies
from quake.data import PreprocessConfig, spectrogram_batch, window_from_stream
from quake.data.config import FILTERS_OFF
from quake.deploy import load
from quake.deploy.ensemble import EventClassifier
from quake.models import HybridViT
from quake.runtime import cpu_has_native_bf16

#: Probabilities from spectrograms cut from the recording's STFT agree with those of windows
#: cut the normal way (window_from_stream per window) to this in float32 (measured: about 2e-7).
PROB_TOLERANCE = 1e-5
#: ... and the log-spectrograms themselves to this (float32 rounding of the STFT).
SPEC_TOLERANCE = 1e-4


#: The shared STFT applies where no filter runs: models saved before the default band-pass, or
#: trained with the filters off. Most tests here are about it.
UNFILTERED = PreprocessConfig(**FILTERS_OFF)


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    """A random-init TINY depth-1 classifier (earthquake, explosion) without filters."""
    torch.manual_seed(0)
    model = HybridViT(depth=1, img_size=UNFILTERED.spectrogram_shape[1:],
                      class_names=["earthquake", "explosion"])  # fmt: skip
    return load(EventClassifier([model], UNFILTERED).save(tmp_path_factory.mktemp("m") / "m"))


@pytest.fixture(scope="module")
def three_component(real_data_dir) -> obspy.Stream:
    """180 s of UW.CINE (HHZ, HHN, HHE at 100 Hz) around an ESEC surface event."""
    folder = real_data_dir / "esec-surface" / "waveforms" / "167"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return obspy.read(str(folder / "UW.CINE..HH?.mseed"))


def normal_windows(stream, config, starts):
    """Each window cut the normal way: the stream around it through ``window_from_stream``,
    anchored so that it starts at ``start``."""
    windows = []
    for t0 in starts:
        piece = stream.slice(t0 - 5, t0 + config.window_s + 5)
        window, _ = window_from_stream(piece, config, p_time=t0 + config.pre_arrival_s)
        windows.append(window)
    return np.stack(windows)


def test_windows_of_the_shared_stft_agree_with_windows_cut_the_normal_way(clf, three_component):
    config = clf.config
    result = annotate_station(clf, three_component, stride_s=1.28, precision="fp32")
    assert result.n_windows == 1 + (18001 - config.window_samples) // 128
    assert not result.skip_counts() and np.isfinite(result.probabilities).all()
    starts = [result.window_start(k) for k in range(result.n_windows)]
    windows = normal_windows(three_component, config, starts)
    expected = clf.predict_proba(windows)
    assert np.abs(result.probabilities - expected).max() < PROB_TOLERANCE
    # the spectrograms themselves, not only what a small random model makes of them
    data = windows[0]  # the recording's first window: its samples start at sample 0
    reading_starts = np.arange(len(windows)) * 128
    whole = np.concatenate([windows[0]] + [w[:, -128:] for w in windows[1:]], axis=1)
    assert np.array_equal(whole[:, : config.window_samples], data)
    cut = RecordingSpectrogram(whole, config).spectrograms(
        torch.from_numpy(windows), reading_starts
    )
    own = spectrogram_batch(torch.from_numpy(windows), config)
    assert torch.allclose(cut, own, atol=SPEC_TOLERANCE, rtol=0)


def test_a_model_with_the_default_filters_annotates_window_by_window(model_dir, three_component):
    """The default band-pass filters each window on its own, so the shared STFT does not
    apply: the windows are cut one by one and give the probabilities of windows cut the
    normal way."""
    filtered = load(model_dir)
    config = filtered.config
    assert config.filters_enabled and not shared_stft_applies(config, 512)
    result = annotate_station(filtered, three_component, stride_s=5.12, precision="fp32")
    assert result.n_windows == 1 + (18001 - config.window_samples) // 512
    starts = [result.window_start(k) for k in range(result.n_windows)]
    expected = filtered.predict_proba(normal_windows(three_component, config, starts))
    assert np.abs(result.probabilities - expected).max() < PROB_TOLERANCE


def test_the_per_window_path_gives_the_same_probabilities(clf, three_component):
    shared = annotate_station(clf, three_component, precision="fp32")
    own = annotate_station(clf, three_component, shared_stft=False, precision="fp32")
    assert np.abs(shared.probabilities - own.probabilities).max() < PROB_TOLERANCE


#: bf16 autocast moves a probability from float32's by at most this (measured: 1e-3 here,
#: 2.4e-3 on the benchmark's station-day).
BF16_TOLERANCE = 1e-2


def test_the_default_precision_is_bf16_where_the_cpu_computes_it(clf, three_component):
    """``auto`` (the default) gives bf16's probabilities on a CPU with bf16 instructions and
    float32's elsewhere; bf16 stays within BF16_TOLERANCE of float32."""
    by = {p: annotate_station(clf, three_component, precision=p).probabilities
          for p in ("fp32", "bf16")}  # fmt: skip
    assert 0 < np.abs(by["bf16"] - by["fp32"]).max() < BF16_TOLERANCE  # bf16 did run
    default = annotate_station(clf, three_component).probabilities
    expected = by["bf16"] if cpu_has_native_bf16() else by["fp32"]
    assert np.array_equal(default, expected)
    with pytest.raises(
        ValueError, match=r"precision must be one of \['auto', 'bf16', 'fp32'\], got 'fp16'"
    ):
        annotate_station(clf, three_component, precision="fp16")


def test_a_constant_offset_and_a_dead_channel_keep_the_agreement(clf, three_component):
    stream = three_component.copy()
    for tr in stream:
        tr.data = tr.data.astype(np.float64) + 2.0e5  # a DC level far above the signal
    stream.select(channel="HHN")[0].data[:] = 7.0  # dead N
    shared = annotate_station(clf, stream, precision="fp32")
    own = annotate_station(clf, stream, shared_stft=False, precision="fp32")
    assert np.abs(shared.probabilities - own.probabilities).max() < PROB_TOLERANCE
    assert all("dead channel" in flags for flags in shared.flags)


def test_a_gap_is_a_skip_with_its_reason_and_nan_probabilities(clf, three_component):
    stream = three_component.copy()
    t0 = stream[0].stats.starttime
    stream.cutout(t0 + 80, t0 + 95)  # 15 s missing on every component
    result = annotate_station(clf, stream)
    counts = result.skip_counts()
    assert set(counts) == {"gap"} and counts["gap"] >= 3
    skipped = np.array([bool(r) for r in result.skipped])
    assert np.isnan(result.probabilities[skipped]).all()
    assert np.isfinite(result.probabilities[~skipped]).all()
    # the windows used across a short part of the gap say so
    starts = np.array([float(result.window_start(k) - t0) for k in range(result.n_windows)])
    touching = ~skipped & (starts < 95) & (starts + clf.config.window_s > 80)
    assert touching.any() and all("gap" in result.flags[k] for k in np.flatnonzero(touching))


def test_the_probability_stream_follows_seisbench_and_opens_in_obspy(clf, three_component):
    stride = 2.56
    probs = clf.annotate(three_component, stride=stride)
    assert [tr.stats.channel for tr in probs] == [channel_code(c) for c in clf.class_names]
    assert {tr.id.rsplit(".", 1)[0] for tr in probs} == {"UW.CINE."}
    first = probs[0]
    assert first.stats.sampling_rate == pytest.approx(1 / stride)
    t0 = three_component[0].stats.starttime
    assert abs(first.stats.starttime - (t0 + clf.config.window_s / 2)) < 0.02
    total = sum(tr.data for tr in probs)
    assert np.allclose(total, 1.0, atol=1e-5)
    buffer = io.BytesIO()
    probs.write(buffer, format="PICKLE")
    buffer.seek(0)
    assert len(obspy.read(buffer)) == len(clf.class_names)


def test_two_stations_give_two_sets_of_traces(clf, three_component):
    other = three_component.copy()
    for tr in other:
        tr.stats.station = "OTHER"
    probs, stations = annotate_stream(clf, three_component + other)
    assert [s.station for s in stations] == ["UW.CINE.", "UW.OTHER."]
    assert len(probs) == 2 * len(clf.class_names)


def test_the_stride_is_checked_and_defaults_to_whole_stft_hops():
    config = PreprocessConfig()
    assert stride_samples(config, None) % config.stft_hop == 0
    assert default_stride_s(config) == pytest.approx(5.12)
    with pytest.raises(ValueError, match="stride 0.001 s is not at least one sample"):
        stride_samples(config, 0.001)
    with pytest.raises(ValueError, match="stride must be a number"):
        stride_samples(config, "5")


# ------------------------------------------------------------------------------ detections
def test_trigger_runs_have_hysteresis_and_stop_at_a_skip():
    from quake.annotate.detect import trigger_runs

    p = np.array([0.1, 0.6, 0.45, 0.41, 0.3, 0.7, np.nan, 0.9, 0.9])
    assert trigger_runs(p, 0.5, 0.4) == [(1, 3), (5, 5), (7, 8)]


def test_thresholds_default_to_the_models_and_are_checked():
    from quake.annotate.detect import class_thresholds

    names = ["earthquake", "noise"]
    assert class_thresholds(names) == {"earthquake": 0.5, "noise": 0.5}
    saved = np.array([0.3, 0.7])
    assert class_thresholds(names, saved, {"noise": 0.9}) == {"earthquake": 0.3, "noise": 0.9}
    with pytest.raises(ValueError, match="unknown class 'blast'"):
        class_thresholds(names, None, {"blast": 0.5})
    with pytest.raises(ValueError, match=r"must be in \(0, 1\], got 2"):
        class_thresholds(names, None, {"noise": 2})


def test_probability_detections_are_rows_per_event_class():
    from quake.annotate.detect import detection_columns, detections
    from quake.annotate.engine import StationAnnotation

    t0 = obspy.UTCDateTime("2020-01-01T00:00:00")
    eq = np.array([0.1, 0.9, 0.8, 0.7, 0.1, 0.95, 0.1, 0.1])
    probs = np.stack([eq, 1 - eq], axis=1)
    flags = [()] * 8
    flags[2] = ("gap",)
    annotation = StationAnnotation("XX.STA.", ["earthquake", "noise"], t0, 5.12, 20.48, probs,
                                   [""] * 8, flags, pre_arrival_s=5.0)  # fmt: skip
    table = detections([annotation], ["earthquake", "noise"])
    assert list(table.columns) == detection_columns(["earthquake", "noise"])
    assert len(table) == 1  # the one-window run at 5 is shorter than the minimum
    row = table.iloc[0]
    assert row["class"] == "earthquake" and row["windows"] == 3 and row["flags"] == "gap"
    assert obspy.UTCDateTime(row["start"]) == t0 + 5.12
    assert obspy.UTCDateTime(row["end"]) == t0 + 3 * 5.12 + 20.48
    assert row["max_prob"] == pytest.approx(0.9) and row["mean_prob"] == pytest.approx(0.8)
    # the station's vote for an event: its most probable window; onset at its P position
    assert obspy.UTCDateTime(row["onset"]) == t0 + 5.12 + 5.0
    assert (row["prob_earthquake"], row["prob_noise"]) == pytest.approx((0.9, 0.1))
    one = detections([annotation], ["earthquake", "noise"], min_duration_s=5.12)
    assert len(one) == 2


@pytest.fixture(scope="module")
def pnw_record(pnw):
    """One pnw-eqex record at 100 Hz (HHZ), its event's origin time and type."""
    catalog = pd.read_csv(pnw / "catalog.csv")
    for event in catalog.itertuples():
        files = sorted((pnw / "waveforms" / event.event_id).glob("*.HHZ.mseed"))
        if files:
            return obspy.read(str(files[0])), obspy.UTCDateTime(event.time), event.event_type
    pytest.skip("no HHZ record in pnw-eqex")


def test_a_model_without_noise_detects_by_sta_lta_at_the_event(clf, pnw_record):
    from quake.annotate.detect import detections

    stream, origin, _ = pnw_record
    assert "noise" not in clf.class_names
    probs, stations = annotate_stream(clf, stream)
    table = detections(stations, list(clf.class_names))
    assert len(table) >= 1 and set(table["method"]) == {"sta/lta"}
    starts = [obspy.UTCDateTime(t) - origin for t in table["start"]]
    assert any(-2 <= s <= 30 for s in starts), starts  # the P arrival after the origin
    assert set(table["class"]) <= set(clf.class_names)


def test_a_gap_over_the_onset_is_a_skip_not_a_detection(clf, pnw_record):
    from quake.annotate.detect import detections

    stream, origin, _ = pnw_record
    _, stations = annotate_stream(clf, stream)
    onsets = [obspy.UTCDateTime(t) for t in detections(stations, list(clf.class_names))["start"]]
    near = [t for t in onsets if -2 <= t - origin <= 30][0]
    gappy = stream.copy()
    gappy.cutout(near + 1, near + 8)  # a third of the onset's window is missing
    _, stations = annotate_stream(clf, gappy)
    table = detections(stations, list(clf.class_names))
    assert not any(abs(obspy.UTCDateTime(t) - near) < 2 for t in table["start"])
    skips = [p.skip for p in stations[0].proposals]
    assert "gap" in skips


# ------------------------------------------------------------------------------ events
def detection_rows(rows) -> pd.DataFrame:
    """A detections table of ``(station, onset seconds after 2020-01-01, p_earthquake)``."""
    from quake.annotate.detect import detection_columns

    t0 = obspy.UTCDateTime("2020-01-01T00:00:00")
    table = pd.DataFrame([{
        "station": station, "start": str(t0 + s - 5), "end": str(t0 + s + 15),
        "onset": str(t0 + s), "class": "earthquake" if p >= 0.5 else "explosion",
        "max_prob": max(p, 1 - p), "mean_prob": max(p, 1 - p), "windows": 1,
        "method": "sta/lta", "flags": "", "prob_earthquake": p, "prob_explosion": 1 - p,
    } for station, s, p in rows])  # fmt: skip
    return table[detection_columns(["earthquake", "explosion"])]


def test_detections_on_enough_stations_within_the_tolerance_are_one_event():
    from quake.annotate.events import associate, event_columns
    from quake.probabilities import combine_station_probabilities, decide

    names = ["earthquake", "explosion"]
    table = detection_rows([
        ("UW.A.", 100.0, 0.9), ("UW.B.", 112.0, 0.3), ("UW.A.", 125.0, 0.6),  # one event
        ("UW.C.", 400.0, 0.2),  # one station only: no event
        ("UW.A.", 900.0, 0.1), ("UW.B.", 940.0, 0.2),  # 40 s apart: beyond the tolerance
    ])  # fmt: skip
    events = associate(table, names)
    assert list(events.columns) == event_columns(names) and len(events) == 1
    event = events.iloc[0]
    assert event["stations"] == "UW.A.;UW.B." and event["n_stations"] == 2
    assert obspy.UTCDateTime(event["time"]) == obspy.UTCDateTime("2020-01-01T00:01:40")
    assert event["event_id"] == "quake-20200101T000140.00"
    # the station-to-event rule of quake classify; UW.A. votes once, with its surer detection
    expected = combine_station_probabilities(np.array([[0.9, 0.1], [0.3, 0.7]]))
    assert (event["prob_earthquake"], event["prob_explosion"]) == pytest.approx(tuple(expected))
    assert event["class"] == names[int(decide(expected))]
    # the class by the model's decision thresholds, not the plain argmax
    thresholds = np.array([0.9, 0.1])
    decided = associate(table, names, thresholds).iloc[0]["class"]
    assert decided == names[int(decide(expected, thresholds))] == "explosion"
    # one station is enough where asked; a wider tolerance joins the last pair
    assert len(associate(table, names, min_stations=1)) == 4
    assert len(associate(table, names, tolerance_s=45)) == 2


def test_association_options_are_checked():
    from quake.annotate.events import associate

    table = detection_rows([("UW.A.", 0.0, 0.5)])
    with pytest.raises(ValueError, match="min_stations must be a whole number >= 1, got 0"):
        associate(table, ["earthquake", "explosion"], min_stations=0)
    with pytest.raises(ValueError, match="tolerance must be a number of seconds >= 0, got -1"):
        associate(table, ["earthquake", "explosion"], tolerance_s=-1)
    with pytest.raises(ValueError, match=r"lacks the columns \['prob_explosion'\]"):
        associate(table.drop(columns="prob_explosion"), ["earthquake", "explosion"])


def test_a_spike_is_flagged_and_repaired_not_a_detection(clf, pnw_record):
    """A one-sample spike (50 times the record's largest sample) in the quiet before the event:
    the reading layer finds it and repairs it (the default spike policy), so the STA/LTA never
    sees it, and the windows over it are used with the flag ``spike``."""
    from quake.annotate.detect import detections

    stream, origin, _ = pnw_record
    spiky = stream.copy()
    trace = spiky[0]
    spike_time = origin - 25
    k = int(round((spike_time - trace.stats.starttime) * trace.stats.sampling_rate))
    trace.data = trace.data.astype(np.float64)
    trace.data[k] = 50 * np.abs(trace.data).max()
    # unrepaired, the spike would trigger the STA/LTA right where it is
    from obspy.signal.trigger import trigger_onset

    from quake.data.onsets import LTA_S, TRIGGER_OFF, TRIGGER_ON, sta_lta

    ratio = sta_lta(trace.data, trace.stats.sampling_rate, LTA_S)
    assert k in [on for on, _ in trigger_onset(ratio, TRIGGER_ON, TRIGGER_OFF)]
    _, (plain,) = annotate_stream(clf, stream)
    _, (annotation,) = annotate_stream(clf, spiky)
    table = detections([annotation], list(clf.class_names))
    assert not any(abs(obspy.UTCDateTime(t) - spike_time) < 3 for t in table["onset"])
    assert len(table) == len(detections([plain], list(clf.class_names)))
    over = [j for j in range(annotation.n_windows)
            if 0 <= spike_time - annotation.window_start(j) < clf.config.window_s]  # fmt: skip
    assert over and all("spike" in annotation.flags[j] for j in over)
    assert not any(annotation.skipped[j] for j in over)
    far = [j for j in range(annotation.n_windows) if j not in over]
    assert not any("spike" in annotation.flags[j] for j in far)
