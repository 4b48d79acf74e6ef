"""Component mapping, band choice, gap merging and resampling of obspy Streams."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import obspy
import pytest
from obspy import Stream, Trace, UTCDateTime

from quake.data import (
    PreprocessConfig,
    SkipTrace,
    component_of,
    stream_to_array,
    stream_to_array_info,
    window_from_stream,
)

T0 = UTCDateTime("2020-01-01T00:00:00")


def _trace(channel, data, rate=100.0, start=T0, station="STA", network="XX", location=""):
    return Trace(
        data=np.asarray(data, dtype=np.float64),
        header={
            "network": network,
            "station": station,
            "location": location,
            "channel": channel,
            "sampling_rate": rate,
            "starttime": start,
        },
    )


def _constant(value, n=500):
    return np.full(n, float(value))


@pytest.fixture
def cfg():
    return PreprocessConfig()


def test_components_come_from_the_channel_letter_not_trace_order(cfg):
    stream = Stream(
        [_trace("HHE", _constant(3)), _trace("HHZ", _constant(1)), _trace("HHN", _constant(2))]
    )
    out = stream_to_array(stream, cfg)
    assert out.shape == (3, 500) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], [1, 2, 3])


def test_numbered_horizontals_map_to_n_e_with_a_warning(cfg, caplog):
    stream = Stream(
        [_trace("HH2", _constant(3)), _trace("HH1", _constant(2)), _trace("HHZ", _constant(1))]
    )
    with caplog.at_level(logging.WARNING, logger="quake.data.components"):
        out = stream_to_array(stream, cfg)
    np.testing.assert_array_equal(out[:, 0], [1, 2, 3])
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "HH1: component 1 taken as N" in messages
    assert "HH2: component 2 taken as E" in messages


@pytest.mark.parametrize("code", ["HHX", "BH3", "SHU", ""])
def test_unknown_channel_code_is_skipped_with_the_code(code, cfg):
    with pytest.raises(SkipTrace, match=rf"unknown channel: channel code '{code}'") as info:
        component_of(code)
    assert info.value.reason == "unknown channel"
    if code:
        with pytest.raises(SkipTrace, match=code):
            stream_to_array(Stream([_trace(code, _constant(1))]), cfg)


@pytest.mark.parametrize(("policy", "expected"), [("zeros", [5, 0, 0]), ("copy_z", [5, 5, 5])])
def test_missing_horizontals_follow_policy(policy, expected):
    cfg = PreprocessConfig(missing_component=policy)
    out = stream_to_array(Stream([_trace("EHZ", _constant(5))]), cfg)
    np.testing.assert_array_equal(out[:, 10], expected)


def test_missing_vertical_is_zeros_under_both_policies():
    stream = Stream([_trace("HHN", _constant(2)), _trace("HHE", _constant(3))])
    for policy in ("zeros", "copy_z"):
        out = stream_to_array(stream, PreprocessConfig(missing_component=policy))
        np.testing.assert_array_equal(out[:, 0], [0, 2, 3])


def test_mixed_sampling_rates_are_resampled_to_config_rate(cfg):
    seconds = 30.0
    z = _trace("HHZ", np.sin(np.arange(int(seconds * 200)) / 200 * 2 * np.pi), rate=200.0)
    n = _trace("HHN", np.ones(int(seconds * 40)), rate=40.0)
    e = _trace("HHE", np.ones(int(seconds * 50)), rate=50.0)
    info = stream_to_array_info(Stream([z, n, e]), cfg)
    assert info.sampling_rate_hz == 100.0
    assert info.data.shape == (3, int(seconds * 100))
    assert info.original_sampling_rate_hz == 200.0
    t = np.arange(info.data.shape[1]) / 100.0
    inner = slice(100, -100)
    np.testing.assert_allclose(info.data[0, inner], np.sin(2 * np.pi * t[inner]), atol=2e-2)
    np.testing.assert_allclose(info.data[1, inner], 1.0, atol=1e-3)


def test_fastest_band_above_minimum_is_used(cfg, caplog):
    stream = Stream(
        [
            _trace("LHZ", _constant(7, 30), rate=1.0),
            _trace("VHZ", _constant(8, 3), rate=0.1),
            _trace("BHZ", _constant(9, 1200), rate=40.0),
        ]
    )
    info = stream_to_array_info(stream, cfg)
    assert info.channels == {"Z": "BHZ"}
    assert info.data.shape == (3, 3000)
    with pytest.raises(
        SkipTrace, match=r"low sampling rate: no channel at >= 20 Hz \(found LH\?=1 Hz"
    ):
        stream_to_array(Stream([_trace("LHZ", _constant(1, 30), rate=1.0)]), cfg)


@pytest.mark.parametrize("fill", ["interpolate", "zeros"])
def test_gaps_are_merged_with_the_configured_fill(fill):
    cfg = PreprocessConfig(gap_fill=fill)
    first = _trace("HHZ", np.full(100, 10.0))
    second = _trace("HHZ", np.full(100, 20.0), start=T0 + 2.0)  # 1 s gap (100 samples)
    out = stream_to_array(Stream([first, second]), cfg)
    assert out.shape == (3, 300)
    gap = out[0, 100:200]
    if fill == "zeros":
        assert not gap.any()
    else:
        assert np.all(np.diff(out[0, 99:201]) > 0)  # a straight line from 10 up to 20
        np.testing.assert_allclose(gap[49], 15.0, atol=0.2)


def test_components_are_aligned_in_time(cfg):
    z = _trace("HHZ", _constant(1, 500))
    n = _trace("HHN", _constant(2, 300), start=T0 + 1.0)
    out = stream_to_array(Stream([z, n]), cfg)
    assert not out[1, :100].any() and (out[1, 100:400] == 2).all() and not out[1, 400:].any()


def test_several_stations_in_one_stream_are_refused(cfg):
    stream = Stream([_trace("HHZ", _constant(1)), _trace("HHZ", _constant(1), station="OTHER")])
    with pytest.raises(SkipTrace, match=r"several stations.*XX\.OTHER\..*XX\.STA\."):
        stream_to_array(stream, cfg)


def test_obspy_example_stream(cfg):
    stream = obspy.read()  # BW.RJOB..EHZ/EHN/EHE, 100 Hz, 3000 samples
    out = stream_to_array(stream, cfg)
    assert out.shape == (3, 3000)
    by_letter = {tr.stats.channel[-1]: tr.data for tr in stream}
    for row, letter in enumerate("ZNE"):
        np.testing.assert_allclose(out[row], by_letter[letter], rtol=1e-6)


def test_window_from_stream_is_anchored_before_p_or_origin(cfg):
    data = np.exp(-0.5 * ((np.arange(6000) - 3000) / 3.0) ** 2)  # a pulse 30 s after the start
    data += 1e-3 * np.random.default_rng(0).normal(size=6000)  # live: zeros would be a dropout
    stream = Stream([_trace("HHZ", data)])
    window, _ = window_from_stream(stream, cfg, p_time=T0 + 30.0)
    assert window.shape == (3, cfg.window_samples)
    assert int(np.argmax(window[0])) == round(cfg.pre_arrival_s * cfg.sampling_rate_hz)
    window, _ = window_from_stream(stream, cfg, origin_time=T0 + 25.0)
    assert int(np.argmax(window[0])) == 700
    with pytest.raises(SkipTrace, match="too short"):
        window_from_stream(stream, cfg, origin_time=T0 + 55.0)


def test_window_from_stream_skips_what_the_adapter_drops(cfg):
    """Classification (window_from_stream) and training (the adapter on the same Streams) skip
    the same stations for the same reasons, through the one check in window_from_array."""
    from quake.data import WaveformDataAdapter

    rng = np.random.default_rng(3)
    nan_after_window = rng.normal(size=6000)
    nan_after_window[5000] = np.nan  # 50 s in: outside the 20.48 s window at the trace start
    streams = {
        "clean": Stream([_trace("HHZ", rng.normal(size=6000))]),
        "nan": Stream([_trace("HHZ", nan_after_window)]),
        "inf": Stream(
            [_trace("EHZ", np.r_[rng.normal(size=10), np.inf, rng.normal(size=2989)], 50.0)]
        ),
        "dead": Stream(
            [_trace("HH" + c, _constant(812.0 if c == "Z" else 0.0, 6000)) for c in "ZNE"]
        ),
        "flat z only": Stream([_trace("HHZ", _constant(4.0, 6000))]),
        "too short": Stream([_trace("HHZ", rng.normal(size=900))]),
    }
    adapter = WaveformDataAdapter(list(streams.values()), ["earthquake"] * len(streams))
    dropped = {int(item.removeprefix("item")): reason for item, reason in adapter.dropped}
    for i, (name, stream) in enumerate(streams.items()):
        if i not in dropped:
            assert name == "clean"
            np.testing.assert_array_equal(
                window_from_stream(stream, cfg)[0], adapter.get_waveform(0)
            )
            continue
        with pytest.raises(SkipTrace) as skip:
            window_from_stream(stream, cfg)
        assert str(skip.value) == dropped[i], name
    assert adapter.drop_counts() == {"nan": 2, "dead": 2, "too short": 1}


def test_window_from_stream_always_trims_and_rejects_nan(cfg):
    """A stream is never cut to length beforehand, and a NaN must not reach a model: both hold
    even for a config without TRIMMING and DROP_NAN."""
    from quake.data import TransformOP

    bare = cfg.replace(transforms=TransformOP.ZSCORE | TransformOP.SPECTROGRAM)
    data = np.random.default_rng(4).normal(size=6000)
    window, _ = window_from_stream(Stream([_trace("HHZ", data)]), bare)
    np.testing.assert_allclose(window[0], data[: cfg.window_samples], rtol=1e-6)
    data[4000] = np.nan
    with pytest.raises(SkipTrace, match=r"^nan: 1 NaN/inf samples$"):
        window_from_stream(Stream([_trace("HHZ", data)]), bare)


# --- segments of one channel at two sampling rates (real pnw-eqex recordings) --------------------
def _real_hhz(pnw) -> Trace:
    """The first 100 Hz HHZ recording of pnw-eqex held in one 150 s segment."""
    for path in sorted((pnw / "waveforms").glob("*/*..HHZ.mseed")):
        stream = obspy.read(str(path))
        if (
            len(stream) == 1
            and stream[0].stats.sampling_rate == 100.0
            and stream[0].stats.npts == 15000
        ):
            return stream[0]
    pytest.skip("no single-segment 150 s HHZ recording at 100 Hz in pnw-eqex")


def _pieces(trace: Trace, *cuts_s: float) -> list[Trace]:
    """``trace`` cut into contiguous segments at ``cuts_s`` seconds from its start."""
    t0, dt = trace.stats.starttime, trace.stats.delta
    edges = [t0, *(t0 + c for c in cuts_s), trace.stats.endtime + dt]
    return [trace.slice(lo, hi - dt).copy() for lo, hi in itertools.pairwise(edges)]


def _at_40_hz(trace: Trace) -> Trace:
    trace = trace.copy()
    trace.resample(40.0)
    return trace


def _with_horizontals(trace: Trace, *z_segments: Trace) -> Stream:
    """Z as the given segments; N and E the unsplit recording under those channel codes (whole,
    so that a Z missing from the window would show as a truncated component)."""
    horizontals = []
    for letter in "NE":
        h = trace.copy()
        h.stats.channel = "HH" + letter
        horizontals.append(h)
    return Stream([*z_segments, *horizontals])


@pytest.mark.parametrize("origin_s", [30.0, 110.0])
def test_a_window_is_read_from_the_rate_whose_segments_cover_it(pnw, cfg, origin_s):
    """HHZ 100 Hz for 75 s, then 40 Hz: the window comes from the segment that covers it, at
    its own rate, never zeros flagged 'truncated' because the other rate won."""
    trace = _real_hhz(pnw)
    first, second = _pieces(trace, 75.0)
    second = _at_40_hz(second)
    covering, other = (first, second) if origin_s < 75.0 else (second, first)
    origin = trace.stats.starttime + origin_s
    window, quality = window_from_stream(
        _with_horizontals(trace, first, second), cfg, origin_time=origin
    )
    alone, _ = window_from_stream(_with_horizontals(trace, covering), cfg, origin_time=origin)
    np.testing.assert_array_equal(window, alone)
    assert np.count_nonzero(window[0]) == window.shape[1]
    assert quality.missing == {} and "missing component" not in quality.flags()
    rate = other.stats.sampling_rate
    assert quality.dropped_segments == [("Z", 1, rate)]
    assert f"dropped 1 segment at {rate:g} Hz (Z)" in quality.describe()


def test_the_rate_covering_the_window_wins_over_the_rate_with_more_segments(pnw, cfg):
    """Two 100 Hz segments before 50 s, one 40 Hz segment after: a window at 100 s is read from
    the 40 Hz segment, and both 100 Hz segments are named as dropped."""
    trace = _real_hhz(pnw)
    early, middle, late = _pieces(trace, 20.0, 50.0)
    stream = _with_horizontals(trace, early, middle, _at_40_hz(late))
    window, quality = window_from_stream(stream, cfg, origin_time=trace.stats.starttime + 100.0)
    assert quality.missing == {}
    assert np.count_nonzero(window[0]) == window.shape[1]
    assert quality.resampled_from_hz == 40.0  # Z read from the 40 Hz segment
    assert quality.dropped_segments == [("Z", 2, 100.0)]
    assert "dropped 2 segments at 100 Hz (Z)" in quality.describe()


@pytest.mark.parametrize("fast_first", [True, False])
@pytest.mark.parametrize("windowed", [True, False])
def test_a_tie_in_coverage_goes_to_the_higher_rate(pnw, cfg, fast_first, windowed):
    """Each rate covering half of the window (or of the whole recording, without a window):
    the 100 Hz segment is kept whichever comes first, and the 40 Hz one is named."""
    trace = _real_hhz(pnw)
    first, second = _pieces(trace, 75.0)
    if fast_first:
        second = _at_40_hz(second)
    else:
        first = _at_40_hz(first)
    middle = trace.stats.starttime + 75.0
    window = (middle - 10.0, middle + 10.0) if windowed else None
    info = stream_to_array_info(Stream([first, second]), cfg, window=window)
    kept = first if fast_first else second
    assert info.original_sampling_rate_hz == 100.0
    assert info.starttime == kept.stats.starttime
    np.testing.assert_allclose(info.data[0, : kept.stats.npts], kept.data, rtol=1e-6)
    assert info.quality.dropped_segments == [("Z", 1, 40.0)]
