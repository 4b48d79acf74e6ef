"""Detrend, taper and band-pass (quake.data.filters) against obspy and scipy on real recordings.

The references are computed here, independently of the code under test: obspy's
``Trace.detrend`` / ``Trace.taper`` / ``Trace.filter`` and a Butterworth designed as obspy
designs it (``iirfilter`` -> ``zpk2sos``) run by ``scipy.signal.sosfiltfilt``. Real windows come
from eqnoise-3c (three components, SeisBench HDF5) and pnw-eqex (raw integer counts with offsets
of thousands, one station at 40 Hz resampled to 100 Hz, vertical only: N and E are zeros);
skipped where the data are absent.
"""

from __future__ import annotations

import json

import numpy as np
import obspy
import pytest
import torch
import yaml
from scipy.signal import iirfilter, sosfiltfilt, zpk2sos

from quake.data import (
    PreprocessConfig,
    WaveformDataAdapter,
    open_dataset,
    spectrogram_batch,
    window_from_stream,
)
from quake.data.config import FILTERS_OFF
from quake.data.filters import WaveformFilter
from quake.deploy.ensemble import CLASSIFIER_FILE, EventClassifier
from quake.models import Backbone, HybridViT
from quake.run_folder import CONFIG_FILE, check_run_folder
from quake.training.config import TrainConfig, load_config

BASE = PreprocessConfig(**FILTERS_OFF)
FS = BASE.sampling_rate_hz
N = BASE.window_samples
QUAKEXNET = BASE.replace(detrend="linear", taper_fraction=0.05, bandpass_hz=(1.0, 20.0))
PNW_FILES = ("uw61362132/X7.WA21..HHZ.mseed", "uw61362132/UW.BRAN..BHZ.mseed")
# float32 windows and a float32 matrix product against float64 references: relative to the
# largest filtered sample of each channel (measured ~3e-7)
RTOL_OF_MAX = 1e-5


@pytest.fixture(scope="module")
def real_windows(real_data_dir) -> np.ndarray:
    """``(6, 3, 2048)`` float32 windows as the reading layer cuts them, filters off."""
    eqnoise = real_data_dir / "eqnoise-3c"
    pnw = real_data_dir / "pnw-eqex" / "waveforms"
    if not eqnoise.is_dir() or not pnw.is_dir():
        pytest.skip("eqnoise-3c or pnw-eqex not found")
    adapter = WaveformDataAdapter(open_dataset(eqnoise), config=BASE)
    windows = list(adapter.get_waveforms([0, 1, 2, 3]))
    at_offset = BASE.replace(anchor="offset", offset_s=40.0)
    for name in PNW_FILES:
        window, _ = window_from_stream(obspy.read(str(pnw / name)), at_offset)
        assert window[0].std() > 0 and abs(window[0].mean()) > 100  # raw counts, offset
        windows.append(window)
    return np.stack(windows).astype(np.float32)


def _reference(x: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """obspy's detrend and taper, then a zero-phase Butterworth designed as obspy does."""
    out = np.zeros(x.shape, dtype=np.float64)
    for index in np.ndindex(x.shape[:-1]):
        trace = obspy.Trace(x[index].astype(np.float64), header={"sampling_rate": FS})
        if config.detrend != "none":
            trace.detrend(config.detrend)
        if config.taper_fraction:
            trace.taper(max_percentage=config.taper_fraction, type="hann")
        if config.bandpass_hz is not None:
            nyquist = FS / 2
            low, high = config.bandpass_hz
            high = 0.9 * nyquist if high is None else high  # an open high corner
            zpk = iirfilter(
                config.bandpass_order,
                [low / nyquist, high / nyquist],
                btype="band",
                ftype="butter",
                output="zpk",
            )
            trace.data = sosfiltfilt(zpk2sos(*zpk), trace.data)
        out[index] = trace.data
    return out


def _filtered(x: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    return WaveformFilter(config, x.shape[-1])(torch.from_numpy(x)).double().numpy()


def _assert_close_per_channel(got: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    scale = np.abs(expected).max(axis=-1, keepdims=True)
    assert np.all(np.abs(got - expected) <= rtol * scale + 1e-12), (
        np.abs(got - expected) / np.maximum(scale, 1e-30)
    ).max()


# --- against obspy and scipy, on real recordings ---------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [
        {"detrend": "demean"},
        {"detrend": "linear"},
        {"taper_fraction": 0.05},
        {"taper_fraction": 0.25},
        {"bandpass_hz": (1.0, 20.0)},  # raw counts with their offsets: no detrend first
        {"bandpass_hz": (2.0, 8.0), "bandpass_order": 2},
        {"detrend": "linear", "taper_fraction": 0.05, "bandpass_hz": (1.0, 20.0)},
        {"detrend": "linear", "taper_fraction": 0.05, "bandpass_hz": (1.0, None)},  # default
        {
            "detrend": "demean",
            "taper_fraction": 0.1,
            "bandpass_hz": (0.5, 45.0),
            "bandpass_order": 6,
        },
    ],
)
def test_filters_match_obspy_and_scipy_on_real_windows(real_windows, changes):
    config = BASE.replace(**changes)
    expected = _reference(real_windows, config)
    got = _filtered(real_windows, config)
    _assert_close_per_channel(got, expected, RTOL_OF_MAX)
    assert not np.allclose(got, real_windows, atol=1e-3)  # something was done
    np.testing.assert_array_equal(got[4:, 1:], 0.0)  # pnw's missing N and E stay zeros


def test_bandpass_is_obspys_zero_phase_filter_away_from_the_ends(real_windows):
    """``bandpass_order`` means obspy's ``corners``: the same filter as
    ``Trace.filter("bandpass", ..., zerophase=True)``, which differs only near the ends (it
    starts from rest where scipy's sosfiltfilt pads)."""
    got = _filtered(real_windows, QUAKEXNET)
    for index in np.ndindex(real_windows.shape[:-1]):
        trace = obspy.Trace(real_windows[index].astype(np.float64), header={"sampling_rate": FS})
        trace.detrend("linear").taper(max_percentage=0.05, type="hann")
        trace.filter("bandpass", freqmin=1.0, freqmax=20.0, corners=4, zerophase=True)
        inner = slice(int(2 * FS), -int(2 * FS))
        scale = max(np.abs(trace.data).max(), 1e-30)
        assert np.abs(got[index][inner] - trace.data[inner]).max() <= 1e-2 * scale


def test_bandpass_removes_what_lies_outside_the_band(real_windows):
    """Power below 0.5 Hz and above 30 Hz falls by orders of magnitude; 3-15 Hz is kept."""
    got = _filtered(real_windows[:4], QUAKEXNET)  # eqnoise-3c: three components each
    taper = _reference(real_windows[:4], QUAKEXNET.replace(bandpass_hz=None))
    freqs = np.fft.rfftfreq(N, 1 / FS)
    before, after = np.abs(np.fft.rfft(taper)) ** 2, np.abs(np.fft.rfft(got)) ** 2
    outside = (freqs < 0.5) | (freqs > 30)
    inside = (freqs > 3) & (freqs < 15)
    ratio_out = after[..., outside].sum(-1) / before[..., outside].sum(-1)
    ratio_in = after[..., inside].sum(-1) / before[..., inside].sum(-1)
    assert ratio_out.max() < 1e-2
    assert np.all((ratio_in > 0.9) & (ratio_in < 1.1))


# --- in the pipeline ---------------------------------------------------------------------------
def test_spectrogram_batch_filters_before_the_zscore(real_windows):
    """Every path (adapter, training, classification, export) makes its spectrograms here."""
    x = torch.from_numpy(real_windows)
    got = spectrogram_batch(x, QUAKEXNET)
    outside = torch.from_numpy(_reference(real_windows, QUAKEXNET).astype(np.float32))
    expected = spectrogram_batch(outside, BASE)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert (got - spectrogram_batch(x, BASE)).abs().max() > 0.5  # the filter changes the input


def test_adapter_and_predict_proba_apply_the_saved_filters(real_data_dir, real_windows, tmp_path):
    eqnoise = open_dataset(real_data_dir / "eqnoise-3c")
    adapter = WaveformDataAdapter(eqnoise, config=QUAKEXNET)
    windows = adapter.get_waveforms([0, 1])
    outside = torch.from_numpy(_reference(windows, QUAKEXNET).astype(np.float32))
    torch.testing.assert_close(
        torch.stack([adapter[0][0], adapter[1][0]]),
        spectrogram_batch(outside, BASE),
        atol=1e-4,
        rtol=1e-4,
    )

    torch.manual_seed(0)
    member = HybridViT(
        backbone=Backbone.TINY,
        depth=1,
        num_classes=2,
        img_size=BASE.spectrogram_shape[1:],
        class_names=["earthquake", "noise"],
    ).eval()
    classifier = EventClassifier([member], QUAKEXNET)
    loaded = EventClassifier.load(classifier.save(tmp_path / "model"))
    assert loaded.config == QUAKEXNET
    with torch.inference_mode():
        direct = torch.softmax(member(spectrogram_batch(outside, BASE)), dim=1).double().numpy()
    np.testing.assert_allclose(loaded.predict_proba(windows), direct, atol=1e-5)


def test_a_flat_channel_stays_flat_and_the_filter_keeps_float32_under_autocast():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, N)).astype(np.float32) * 300 + 5000  # counts with an offset
    x[0, 1] = 1234.5  # dead
    x[1, 2] = 0.0  # missing
    z = spectrogram_batch(torch.from_numpy(x), QUAKEXNET.replace(transforms=["ZSCORE"]))
    assert torch.all(z[0, 1] == 0) and torch.all(z[1, 2] == 0)
    torch.testing.assert_close(z[0, 0].std(correction=0), torch.tensor(1.0))

    module = WaveformFilter(QUAKEXNET, N)
    plain = module(torch.from_numpy(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = module(torch.from_numpy(x))
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, plain)


# --- config ------------------------------------------------------------------------------------
def test_the_default_filters_take_out_what_lies_below_1_hz():
    config = PreprocessConfig()
    assert (config.detrend, config.taper_fraction) == ("linear", 0.05)
    assert config.bandpass_hz == (1.0, None) and config.to_dict()["bandpass_hz"] == [1.0, None]
    assert config.filters_enabled and not BASE.filters_enabled
    assert load_config().data.preprocess_config() == config  # what training uses
    for rate in (100.0, 32.0):  # the open high corner follows the rate: 0.9 x Nyquist
        at_rate = config.replace(sampling_rate_hz=rate)
        t = np.arange(at_rate.window_samples) / rate
        inner = slice(len(t) // 4, 3 * len(t) // 4)  # away from the taper
        for f, passed in ((0.2, False), (5.0, True), (0.97 * rate / 2, False)):
            tone = np.sin(2 * np.pi * f * t).astype(np.float32)[None, None]
            gain = np.abs(_filtered(tone, at_rate)[0, 0, inner]).max()
            assert gain > 0.9 if passed else gain < 0.5, (rate, f, gain)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"bandpass_hz": (1, 60)}, r"high corner 60 Hz is not below the Nyquist frequency 50 Hz"),
        ({"bandpass_hz": (1, 50)}, r"high corner 50 Hz .* expected \[low, high\] with 0 < low"),
        (
            {"sampling_rate_hz": 20.0, "window_s": 60.0, "bandpass_hz": (1, 20)},
            r"high corner 20 Hz is not below the Nyquist frequency 10 Hz \(sampling_rate_hz=20",
        ),
        ({"bandpass_hz": (0, 20)}, r"low corner must be a finite number > 0 Hz, got 0"),
        ({"bandpass_hz": (20, 1)}, r"low corner 20 Hz is not below the high corner 1 Hz"),
        ({"bandpass_hz": (1, float("nan"))}, r"high corner must be a finite number > 0 Hz"),
        ({"bandpass_hz": (1,)}, r"bandpass_hz must be two corners in Hz, got \(1,\)"),
        ({"bandpass_hz": "1-20"}, r"bandpass_hz must be two corners in Hz, got '1-20'"),
        ({"bandpass_hz": (1, 20), "window_s": 0.2}, r"20 samples is too short for a band-pass"),
        ({"bandpass_order": 0}, r"bandpass_order must be an integer in \[1, 10\], got 0"),
        ({"bandpass_order": 2.0}, r"bandpass_order must be an integer in \[1, 10\], got 2.0"),
        ({"taper_fraction": 0.6}, r"taper_fraction must be a number in \[0, 0.5\], got 0.6"),
        ({"taper_fraction": -0.1}, r"taper_fraction must be a number in \[0, 0.5\], got -0.1"),
        ({"detrend": "constant"}, r"detrend must be one of \['none', 'demean', 'linear'\]"),
    ],
)
def test_bad_filter_settings_name_the_value(changes, match):
    with pytest.raises(ValueError, match=match):
        PreprocessConfig(**{"stft_nperseg": 16, **changes})


def test_filter_settings_round_trip_through_json_and_yaml():
    config = PreprocessConfig(
        detrend="demean", taper_fraction=0.1, bandpass_hz=[2, 8], bandpass_order=3
    )
    assert config.bandpass_hz == (2.0, 8.0)
    d = config.to_dict()
    assert d["bandpass_hz"] == [2.0, 8.0]
    assert PreprocessConfig.from_dict(json.loads(json.dumps(d))) == config
    assert PreprocessConfig.from_dict(yaml.safe_load(yaml.safe_dump(d))) == config

    train = load_config(overrides={"data.preprocess.bandpass_hz": [1, 20]})
    assert TrainConfig.from_dict(yaml.safe_load(train.to_yaml())) == train
    assert train.data.preprocess_config().bandpass_hz == (1.0, 20.0)

    # a config file that leaves the keys out takes the defaults
    partial = yaml.safe_load(TrainConfig().validate().to_yaml())
    for key in ("detrend", "taper_fraction", "bandpass_hz", "bandpass_order"):
        del partial["data"]["preprocess"][key]
    assert TrainConfig.from_dict(partial) == TrainConfig().validate()


def test_a_run_started_before_the_filters_is_not_resumed_with_them(tmp_path):
    """A run folder's config.yaml without the filter keys was trained without filters: the
    default command, which filters now, must not add folds of another preprocessing to it."""
    folder = tmp_path / "run"
    folder.mkdir()
    old = yaml.safe_load(TrainConfig().validate().to_yaml())
    for key in FILTERS_OFF:
        del old["data"]["preprocess"][key]
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(old))
    with pytest.raises(ValueError, match=r"cannot resume .*bandpass_hz"):
        check_run_folder(folder, load_config(), "training run")
    unfiltered = load_config(
        overrides={f"data.preprocess.{key}": value for key, value in FILTERS_OFF.items()}
    )
    assert check_run_folder(folder, unfiltered, "training run")  # its own settings resume it


def test_a_classifier_saved_before_the_filters_existed_loads_without_them(tmp_path):
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    member = HybridViT(
        backbone=Backbone.TINY,
        depth=1,
        num_classes=2,
        img_size=BASE.spectrogram_shape[1:],
        class_names=["earthquake", "noise"],
    )
    folder = EventClassifier([member], BASE).save(tmp_path / "old")
    manifest = json.loads((folder / CLASSIFIER_FILE).read_text())
    for key in ("detrend", "taper_fraction", "bandpass_hz", "bandpass_order"):
        del manifest["preprocess"][key]
    (folder / CLASSIFIER_FILE).write_text(json.dumps(manifest))

    old = EventClassifier.load(folder)
    assert old.config == BASE and not old.config.filters_enabled
    x = rng.normal(size=(3, 3, N)).astype(np.float32) * 100 + 500
    with torch.inference_mode():
        expected = torch.softmax(member.eval()(spectrogram_batch(torch.from_numpy(x), BASE)), 1)
    np.testing.assert_allclose(old.predict_proba(x), expected.double().numpy(), atol=1e-6)
