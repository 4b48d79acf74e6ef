"""Properties of each transform and of the preprocessing config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from quake.data import (
    DEFAULT_TRANSFORMS,
    PreprocessConfig,
    SkipTrace,
    TransformOP,
    resample_waveform,
    spectrogram_batch,
    trim_window,
    window_from_array,
    zscore_batch,
)
from quake.data.config import FILTERS_OFF


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# --- config ----------------------------------------------------------------------------------
def test_config_defaults_and_derived_sizes():
    cfg = PreprocessConfig()
    assert cfg.window_samples == round(20.48 * 100)
    f = cfg.stft_nperseg // 2 + 1
    t = 1 + (cfg.window_samples - cfg.stft_nperseg) // cfg.stft_hop
    assert cfg.spectrogram_shape == (3, f, t)
    assert cfg.transforms == DEFAULT_TRANSFORMS


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("anchor", "origin", r"anchor must be one of .*'origin'"),
        ("missing_component", "mean", r"missing_component must be one of .*'mean'"),
        ("gap_fill", "nan", r"gap_fill must be one of .*'nan'"),
        ("sampling_rate_hz", 0, r"sampling_rate_hz must be a finite number > 0, got 0"),
        ("window_s", -1.0, r"window_s must be .*-1.0"),
        ("stft_hop", 0, r"stft_hop must be an integer >= 1, got 0"),
        ("stft_nperseg", 4096, r"stft_nperseg=4096 is longer than the window"),
        ("pre_arrival_s", float("nan"), r"pre_arrival_s must be a finite number >= 0"),
        ("transforms", ["ZSCORE", "FFT"], r"unknown transform 'FFT'"),
    ],
)
def test_config_validation_names_value(field, value, match):
    with pytest.raises(ValueError, match=match):
        PreprocessConfig(**{field: value})


def test_config_dict_round_trip_is_json_safe():
    cfg = PreprocessConfig(window_s=10.0, transforms=TransformOP.TRIMMING | TransformOP.ZSCORE)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["transforms"] == ["TRIMMING", "ZSCORE"]
    assert PreprocessConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown PreprocessConfig keys"):
        PreprocessConfig.from_dict({**d, "window": 3})
    assert cfg.replace(stft_hop=16).stft_hop == 16
    with pytest.raises(ValueError, match="stft_hop"):
        cfg.replace(stft_hop=-3)


# --- DROP_NAN ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_skipped_or_repaired(bad, rng):
    cfg = PreprocessConfig(window_s=10.0, anchor="start")
    x = rng.normal(size=(3, 1000)).astype(np.float32)
    x[2, 50] = bad
    with pytest.raises(SkipTrace, match=r"^nan: 1 NaN/inf samples$") as info:
        window_from_array(x, cfg)
    assert info.value.reason == "nan"
    window, quality = window_from_array(x, cfg.replace(quality={"non_finite": "repair"}))
    assert np.isfinite(window).all() and window[2, 50] == pytest.approx((x[2, 49] + x[2, 51]) / 2)
    assert (
        quality.flags() == ["non-finite"]
        and quality.describe() == "1 non-finite samples interpolated"
    )


# --- TRIMMING ---------------------------------------------------------------------------------
def test_trim_window_lengths_and_anchors(rng):
    cfg = PreprocessConfig(window_s=10.0, pre_arrival_s=2.0)
    x = rng.normal(size=(3, 3000)).astype(np.float32)
    window, padded = trim_window(x, cfg, anchor_sample=700)
    assert window.shape == (3, 1000) and not padded
    np.testing.assert_array_equal(window, x[:, 500:1500])
    # no anchor -> trace start
    window, _ = trim_window(x, cfg, anchor_sample=None)
    np.testing.assert_array_equal(window, x[:, :1000])
    # offset anchor
    window, _ = trim_window(x, cfg.replace(anchor="offset", offset_s=3.0), anchor_sample=700)
    np.testing.assert_array_equal(window, x[:, 300:1300])
    window, _ = trim_window(x, cfg.replace(anchor="start"), anchor_sample=700)
    np.testing.assert_array_equal(window, x[:, :1000])


def test_trim_window_pads_and_flags_when_partly_outside(rng):
    cfg = PreprocessConfig(window_s=10.0, pre_arrival_s=2.0)
    x = rng.normal(size=(3, 800)).astype(np.float32)
    window, padded = trim_window(x, cfg, anchor_sample=None)
    assert padded and window.shape == (3, 1000)
    np.testing.assert_array_equal(window[:, :800], x)
    assert not window[:, 800:].any()
    # P so early that the window starts before the data: front padding
    window, padded = trim_window(x, cfg, anchor_sample=100)
    assert padded
    assert not window[:, :100].any()
    np.testing.assert_array_equal(window[:, 100:900], x[:, :800])


def test_window_below_min_coverage_is_skipped_and_above_it_is_named(rng):
    cfg = PreprocessConfig(window_s=10.0, anchor="start")
    x = rng.normal(size=(3, 799)).astype(np.float32)
    with pytest.raises(SkipTrace, match=r"^too short: 80% of the window backed by data") as info:
        window_from_array(x, cfg)
    assert info.value.reason == "too short" and "need at least 80%" in str(info.value)
    window, quality = window_from_array(rng.normal(size=(3, 800)).astype(np.float32), cfg)
    assert window.shape == (3, 1000) and quality.padded
    assert quality.coverage == pytest.approx(0.8) and quality.padded_s == pytest.approx(2.0)
    assert "partial window" in quality.flags() and "2.0 s zero-padded" in quality.describe()
    loose = cfg.replace(quality={"min_coverage": 0.5})
    assert window_from_array(x[:, :500], loose)[1].coverage == pytest.approx(0.5)


# --- the checked window (training and classification) ------------------------------------------
def test_window_from_array_checks_in_order(rng):
    cfg = PreprocessConfig()
    short = rng.normal(size=(3, 600)).astype(np.float32)
    short[2, 5] = np.nan
    with pytest.raises(SkipTrace, match=r"^nan: 1 NaN/inf samples$"):
        window_from_array(short, cfg)  # NaN is checked before the length
    # a NaN in a row the copy_z policy overwrites still counts: the data as given is checked
    x = rng.normal(size=(3, 3000)).astype(np.float32)
    x[1, 2999] = np.nan
    with pytest.raises(SkipTrace, match="^nan"):
        window_from_array(x, cfg, copy_z_rows=[1, 2])
    window, quality = window_from_array(x, cfg, copy_z_rows=[1, 2], transforms=TransformOP.TRIMMING)
    np.testing.assert_array_equal(window[1], window[0])
    assert not quality.padded and not quality.dead
    assert quality.missing == {"N": "absent", "E": "absent"}
    assert "filled with a copy of Z" in quality.describe()
    dead = np.zeros((3, 3000), dtype=np.float32)
    dead[0] = 7.0
    with pytest.raises(SkipTrace, match="^dead: all three channels are flat$"):
        window_from_array(dead, cfg)
    with pytest.raises(
        SkipTrace, match=r"^wrong length: 2999 samples without TRIMMING; expected 2048$"
    ):
        window_from_array(x[:, :2999], cfg, transforms=TransformOP(0))


def test_window_from_array_resamples_and_moves_the_anchor(rng):
    cfg = PreprocessConfig()
    x = np.zeros((3, 2000), dtype=np.float32)
    x[0] = np.exp(-0.5 * ((np.arange(2000) - 1000) / 3.0) ** 2)  # a pulse 20 s in, at 50 Hz
    x[0] += 1e-3 * rng.normal(size=2000)  # a live sensor: exact zeros would be a dropout
    x[1] = 3.0  # a flat channel stays exactly flat through the filter
    x[2] = rng.normal(size=2000)
    window, quality = window_from_array(x, cfg, sampling_rate_hz=50.0, anchor_sample=1000.0)
    assert window.shape == (3, cfg.window_samples) and not quality.padded
    assert int(np.argmax(window[0])) == round(cfg.pre_arrival_s * cfg.sampling_rate_hz)
    assert (window[1] == 3.0).all() and quality.dead == "N"
    assert quality.resampled_from_hz == 50.0 and "resampled from 50 Hz" in quality.describe()


# --- ZSCORE -----------------------------------------------------------------------------------
def test_zscore_mean_zero_std_one_per_trace_and_channel(rng):
    scales = np.array([1e-9, 1.0, 3e5], dtype=np.float32)[None, :, None]
    x = (rng.normal(size=(4, 3, 2048)) * scales + 7.0 * scales).astype(np.float32)
    before = x.copy()
    z = zscore_batch(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(x, before)  # the input is left alone
    np.testing.assert_allclose(z.mean(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=-1), 1.0, atol=1e-4)


def test_zscore_flat_channel_becomes_zeros_not_nan(rng):
    x = rng.normal(size=(2, 3, 512)).astype(np.float32)
    x[0, 1] = 123.456  # dead channel with an offset
    x[1, 2] = 0.0
    z = zscore_batch(torch.from_numpy(x)).numpy()
    assert np.isfinite(z).all()
    assert not z[0, 1].any() and not z[1, 2].any()
    np.testing.assert_allclose(z[0, 0].std(), 1.0, atol=1e-4)


# --- SPECTROGRAM ------------------------------------------------------------------------------
def _reference_spectrogram(channel: np.ndarray, nperseg: int, hop: int) -> np.ndarray:
    """Magnitude of the rfft of Hann-windowed frames, frame by frame (no torch)."""
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(nperseg) / nperseg)
    frames = [
        np.abs(np.fft.rfft(channel[s : s + nperseg] * hann))
        for s in range(0, len(channel) - nperseg + 1, hop)
    ]
    return np.stack(frames, axis=1)


@pytest.mark.parametrize(("nperseg", "hop"), [(64, 32), (128, 16), (50, 25)])
def test_spectrogram_shape_matches_config(nperseg, hop, rng):
    cfg = PreprocessConfig(stft_nperseg=nperseg, stft_hop=hop)
    x = torch.from_numpy(rng.normal(size=(5, 3, cfg.window_samples)).astype(np.float32))
    spec = spectrogram_batch(x, cfg)
    assert spec.dtype == torch.float32
    assert tuple(spec.shape[1:]) == cfg.spectrogram_shape
    assert spec.shape[2] == nperseg // 2 + 1
    assert tuple(spec.shape) == (5, *cfg.output_shape)


def test_spectrogram_values_match_framewise_fft(rng):
    cfg = PreprocessConfig(window_s=5.12, stft_hop=32, log_spectrogram=False, **FILTERS_OFF)
    transforms = TransformOP.SPECTROGRAM  # no filters, no z-score: compare raw magnitudes
    x = rng.normal(size=(2, 3, cfg.window_samples)).astype(np.float32)
    spec = spectrogram_batch(torch.from_numpy(x), cfg.replace(transforms=transforms)).numpy()
    for b in range(2):
        for c in range(3):
            ref = _reference_spectrogram(x[b, c].astype(np.float64), cfg.stft_nperseg, cfg.stft_hop)
            np.testing.assert_allclose(spec[b, c], ref, rtol=1e-4, atol=1e-4)
    logged = spectrogram_batch(
        torch.from_numpy(x), cfg.replace(transforms=transforms, log_spectrogram=True)
    )
    np.testing.assert_allclose(logged.numpy(), np.log1p(spec), rtol=1e-5, atol=1e-6)


def test_spectrogram_batch_equals_one_by_one_and_validates_shape(rng):
    cfg = PreprocessConfig()
    x = torch.from_numpy(rng.normal(size=(6, 3, cfg.window_samples)).astype(np.float32))
    batched = spectrogram_batch(x, cfg)
    single = torch.cat([spectrogram_batch(x[i : i + 1], cfg) for i in range(6)])
    # the default filters are a float32 matrix product, whose rounding depends on the batch
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)
    unfiltered = cfg.replace(**FILTERS_OFF)
    one_by_one = torch.cat([spectrogram_batch(x[i : i + 1], unfiltered) for i in range(6)])
    torch.testing.assert_close(spectrogram_batch(x, unfiltered), one_by_one)
    with pytest.raises(ValueError, match=r"shape \(batch, 3, samples\), got \(3, 2048\)"):
        spectrogram_batch(x[0], cfg)
    with pytest.raises(ValueError, match="fewer than stft_nperseg=64"):
        spectrogram_batch(x[:, :, :10], cfg)


def test_spectrogram_of_flat_channel_is_finite(rng):
    cfg = PreprocessConfig()
    x = rng.normal(size=(1, 3, cfg.window_samples)).astype(np.float32)
    x[0, 2] = -4.0
    spec = spectrogram_batch(torch.from_numpy(x), cfg)
    assert torch.isfinite(spec).all()
    assert not spec[0, 2].any()


# --- resampling -------------------------------------------------------------------------------
@pytest.mark.parametrize("from_hz", [40.0, 50.0, 125.0, 200.0, 500.0])
def test_resample_to_100_hz_length_and_content(from_hz):
    seconds = 20.0
    t_in = np.arange(int(seconds * from_hz)) / from_hz
    x = np.sin(2 * np.pi * 1.5 * t_in)[None].repeat(3, axis=0)
    y = resample_waveform(x, from_hz, 100.0)
    assert y.dtype == np.float32
    assert y.shape == (3, int(np.ceil(x.shape[1] * 100.0 / from_hz)))
    t_out = np.arange(y.shape[1]) / 100.0
    inner = slice(200, y.shape[1] - 200)  # away from the filter's edge effects
    np.testing.assert_allclose(y[0, inner], np.sin(2 * np.pi * 1.5 * t_out[inner]), atol=2e-2)


def test_resample_rejects_bad_rates():
    with pytest.raises(ValueError, match=r"from_hz=0"):
        resample_waveform(np.zeros((3, 10)), 0, 100.0)
