"""WaveformDataAdapter on arrays, Streams and datasets: labels, drops, shapes, anchors."""

from __future__ import annotations

import numpy as np
import obspy
import pytest
import torch
from obspy import Stream, Trace

from quake.classes import ClassNames
from quake.data import (
    PreprocessConfig,
    SeisBenchWriter,
    TransformOP,
    WaveformDataAdapter,
    open_dataset,
)

N = 2400  # 24 s at 100 Hz: longer than the 20.48 s window


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def waveforms(rng):
    return rng.normal(size=(8, 3, N)).astype(np.float32)


def test_adapter_on_arrays_yields_spectrogram_and_label(waveforms):
    labels = ["earthquake", "noise"] * 4
    adapter = WaveformDataAdapter(
        events=waveforms,
        labels=labels,
        stft_nperseg=64,
        stft_hop=32,
        transforms=TransformOP.DROP_NAN
        | TransformOP.TRIMMING
        | TransformOP.ZSCORE
        | TransformOP.SPECTROGRAM,
    )
    assert len(adapter) == 8
    assert adapter.class_names == ["earthquake", "noise"]
    spec, label = adapter[1]
    assert spec.dtype == torch.float32
    assert tuple(spec.shape) == adapter.output_shape == (3, 33, 63)
    assert label == 1 and adapter.labels.tolist() == [0, 1] * 4
    assert adapter.metadata["source_id"].is_unique
    assert adapter.metadata["source_type"].tolist() == labels
    assert adapter.get_waveform(1).shape == (3, adapter.config.window_samples)
    np.testing.assert_array_equal(adapter.get_waveform(1), waveforms[1, :, :2048])


def test_adapter_accepts_a_list_of_arrays_of_different_lengths(rng):
    events = [rng.normal(size=(3, n)).astype(np.float32) for n in (2048, 3000, 1800)]
    adapter = WaveformDataAdapter(events, ["earthquake"] * 3)
    assert len(adapter) == 3
    assert adapter.metadata["trace_padded"].tolist() == [False, False, True]
    assert adapter.metadata["trace_quality"].tolist()[2] == "window 88% covered, 2.5 s zero-padded"
    assert adapter.quality_counts == {"partial window": 1}


def test_nan_events_are_dropped_counted_and_named(waveforms):
    waveforms[2, 1, 100] = np.nan
    waveforms[5, 0, 7] = np.inf
    adapter = WaveformDataAdapter(waveforms, ["earthquake"] * 8)
    assert len(adapter) == 6
    assert [item for item, _ in adapter.dropped] == ["item2", "item5"]
    assert adapter.drop_counts() == {"nan": 2}
    assert "item2" not in set(adapter.metadata["trace_name"])
    for i in range(len(adapter)):
        assert torch.isfinite(adapter[i][0]).all()


def test_other_bad_items_are_dropped_with_their_reason(waveforms, rng):
    events = list(waveforms[:3])
    events.append(rng.normal(size=(3, 600)).astype(np.float32))  # far too short
    events.append(np.zeros((3, N), dtype=np.float32))  # all channels dead
    events.append(rng.normal(size=(2, N)).astype(np.float32))  # not three components
    flat_one = waveforms[3].copy()
    flat_one[2] = 42.0  # one dead channel: kept, zeros after z-score
    events.append(flat_one)
    adapter = WaveformDataAdapter(events, ["noise"] * len(events))
    reasons = dict(adapter.dropped)
    assert reasons["item3"].startswith("too short: 29% of the window backed by data")
    assert reasons["item4"] == "dead: all three channels are flat"
    assert reasons["item5"].startswith("bad shape: waveform shape (2, 2400)")
    assert adapter.drop_counts() == {"too short": 1, "dead": 1, "bad shape": 1}
    assert len(adapter) == 4
    assert adapter.metadata["trace_flat_channels"].tolist() == ["", "", "", "E"]
    spec, _ = adapter[3]
    assert torch.isfinite(spec).all() and not spec[2].any()


def test_class_names_encode_labels_and_reject_unknown(waveforms):
    names = ClassNames(["noise", "explosion", "earthquake"])
    adapter = WaveformDataAdapter(
        waveforms[:3], ["earthquake", "Explosion", "noise"], class_names=names
    )
    assert adapter.labels.tolist() == [2, 1, 0]
    assert adapter.class_names is names
    with pytest.raises(ValueError, match=r"unknown class 'quarry blast'"):
        WaveformDataAdapter(
            waveforms[:2], ["noise", "quarry blast"], class_names=["noise", "earthquake"]
        )
    with pytest.raises(ValueError, match="got 2 labels for 3 events"):
        WaveformDataAdapter(waveforms[:3], ["noise", "noise"])
    with pytest.raises(ValueError, match=r"unknown class name 'tremor'"):
        WaveformDataAdapter(waveforms[:2], ["noise", "tremor"])
    ints = WaveformDataAdapter(waveforms[:2], [1, 0], class_names=["earthquake", "noise"])
    assert ints.labels.tolist() == [1, 0]
    assert ints.metadata["source_type"].tolist() == ["noise", "earthquake"]


def test_unlabelled_events_get_minus_one(waveforms):
    adapter = WaveformDataAdapter(waveforms[:2], class_names=["earthquake", "noise"])
    assert adapter[0][1] == -1
    assert adapter.class_names == ["earthquake", "noise"]


def test_explicit_stft_arguments_override_config(waveforms):
    cfg = PreprocessConfig(stft_nperseg=128, stft_hop=64)
    assert WaveformDataAdapter(waveforms[:1], ["noise"], config=cfg).output_shape == (3, 65, 31)
    adapter = WaveformDataAdapter(
        waveforms[:1], ["noise"], stft_nperseg=32, stft_hop=16, config=cfg
    )
    assert adapter.output_shape == (3, 17, 1 + (2048 - 32) // 16)
    assert tuple(adapter[0][0].shape) == adapter.output_shape


def test_without_spectrogram_the_adapter_yields_zscored_windows(waveforms):
    adapter = WaveformDataAdapter(
        waveforms[:2], ["noise"] * 2, transforms=TransformOP.TRIMMING | TransformOP.ZSCORE
    )
    x, _ = adapter[0]
    assert tuple(x.shape) == adapter.output_shape == (3, 2048)
    np.testing.assert_allclose(x.std(dim=-1, correction=0).numpy(), 1.0, atol=1e-4)


def test_without_trimming_items_must_have_the_window_length(waveforms):
    adapter = WaveformDataAdapter(
        [waveforms[0], waveforms[1, :, :2048]], ["noise"] * 2, transforms=TransformOP.SPECTROGRAM
    )
    assert len(adapter) == 1
    assert adapter.dropped[0][1].startswith("wrong length: 2400 samples without TRIMMING")


def test_batched_access_matches_item_access(waveforms):
    adapter = WaveformDataAdapter(waveforms, ["noise"] * 8)
    stacked = np.stack([adapter.get_waveform(i) for i in range(len(adapter))])
    np.testing.assert_array_equal(adapter.load_waveforms(), stacked)
    batch = adapter.spectrograms([0, 3, 5])
    for row, i in enumerate([0, 3, 5]):  # the filters' float32 product rounds by batch size
        torch.testing.assert_close(batch[row], adapter[i][0], rtol=1e-4, atol=1e-4)


def test_adapter_on_streams_including_obspy_example():
    good = obspy.read()
    bad = Stream([Trace(np.ones(3000), header={"channel": "HHX", "sampling_rate": 100.0})])
    adapter = WaveformDataAdapter([good, bad], ["earthquake", "earthquake"])
    assert len(adapter) == 1
    assert adapter.dropped[0][1].startswith("unknown channel: channel codes ['HHX']")
    row = adapter.metadata.iloc[0]
    assert (row["station_network_code"], row["station_code"], row["trace_channel"]) == (
        "BW",
        "RJOB",
        "EH",
    )
    assert tuple(adapter[0][0].shape) == adapter.output_shape
    with pytest.raises(ValueError, match="one obspy Stream; expected a list of Streams"):
        WaveformDataAdapter(good, ["earthquake"])


def test_p_anchor_is_converted_when_the_set_is_resampled(tmp_path):
    rate, p_sample = 50.0, 1000
    waveform = np.zeros((3, 3000), dtype=np.float32)
    noise = np.random.default_rng(0).normal(size=(3, 3000))
    waveform[0] = np.exp(-0.5 * ((np.arange(3000) - p_sample) / 3.0) ** 2)  # a pulse at P
    waveform[0] += 1e-3 * noise[0]  # a live sensor: exact zeros would be a dropout
    waveform[1:] = noise[1:]
    with SeisBenchWriter(tmp_path / "set", sampling_rate_hz=rate) as writer:
        writer.add(
            "a",
            waveform,
            source_id="ev1",
            source_type="earthquake",
            trace_p_arrival_sample=p_sample,
        )
        writer.add("b", waveform, source_id="ev2", source_type="noise")
    dataset = open_dataset(tmp_path / "set")
    cfg = PreprocessConfig()
    adapter = WaveformDataAdapter(dataset, config=cfg, class_names=["earthquake", "noise"])
    assert adapter.labels.tolist() == [0, 1]
    window = adapter.get_waveform(0)
    assert int(np.argmax(window[0])) == round(cfg.pre_arrival_s * cfg.sampling_rate_hz)
    # no P: the window starts at the trace start, at 100 Hz the pulse is at 2 * 1000
    assert int(np.argmax(adapter.get_waveform(1)[0])) == 2 * p_sample


def test_dead_channel_stays_dead_through_resampling(tmp_path, rng):
    waveform = rng.normal(size=(3, 1500)).astype(np.float32)
    waveform[1] = 812.0  # a dead channel with an offset, recorded at 50 Hz
    with SeisBenchWriter(tmp_path / "set", sampling_rate_hz=50.0) as writer:
        writer.add("a", waveform, source_type="earthquake")
    adapter = WaveformDataAdapter(open_dataset(tmp_path / "set"))
    assert adapter.metadata["trace_flat_channels"].tolist() == ["N"]
    assert (adapter.get_waveform(0)[1] == 812.0).all()
    assert not adapter[0][0][1].any()
