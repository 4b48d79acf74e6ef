"""Continuous annotation (:mod:`quake.annotate`): sliding windows over real recordings,
spectrograms cut from one STFT against the per-window path, skips and the probability Stream."""

from __future__ import annotations

import io

import numpy as np
import obspy
import pytest
import torch

from quake.annotate import annotate_station, annotate_stream, channel_code, default_stride_s
from quake.annotate.engine import stride_samples
from quake.annotate.spectrogram import RecordingSpectrogram
from quake.data import PreprocessConfig, spectrogram_batch, window_from_stream
from quake.deploy import load

#: Probabilities from spectrograms cut from the recording's STFT agree with those of windows
#: cut the normal way (window_from_stream per window) to this (measured: about 2e-7).
PROB_TOLERANCE = 1e-5
#: ... and the log-spectrograms themselves to this (float32 rounding of the STFT).
SPEC_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def clf(model_dir):
    return load(model_dir)


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
    result = annotate_station(clf, three_component, stride_s=1.28)
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


def test_the_per_window_path_gives_the_same_probabilities(clf, three_component):
    shared = annotate_station(clf, three_component)
    own = annotate_station(clf, three_component, shared_stft=False)
    assert np.abs(shared.probabilities - own.probabilities).max() < PROB_TOLERANCE


def test_a_constant_offset_and_a_dead_channel_keep_the_agreement(clf, three_component):
    stream = three_component.copy()
    for tr in stream:
        tr.data = tr.data.astype(np.float64) + 2.0e5  # a DC level far above the signal
    stream.select(channel="HHN")[0].data[:] = 7.0  # dead N
    shared = annotate_station(clf, stream)
    own = annotate_station(clf, stream, shared_stft=False)
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
