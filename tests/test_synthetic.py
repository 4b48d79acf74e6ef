"""The embedded synthetic set: determinism, SeisBench layout, physics, and the default-set cache."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from quake.data import synthetic

FS = 100.0
REQUIRED_COLUMNS = [
    "trace_name",
    "source_id",
    "source_type",
    "station_network_code",
    "station_code",
    "trace_channel",
    "trace_sampling_rate_hz",
    "trace_npts",
    "trace_p_arrival_sample",
    "trace_s_arrival_sample",
    "source_magnitude",
    "source_depth_km",
    "path_ep_distance_km",
    "trace_snr_db",
    "trace_components",
]
SMALL_SET = {
    "n_events_per_class": 2,
    "stations_per_event": (1, 2),
    "seed": 0,
    "sampling_rate_hz": 100.0,
    "duration_s": 12.0,
}


def event(seed: int, kind: str, **kwargs) -> tuple[np.ndarray, dict]:
    params = {"distance_km": 40.0, "magnitude": 2.0, "depth_km": 8.0, "snr_db": 30.0}
    params.update(kwargs)
    if kind == "noise":
        params = {}
    return synthetic.synthesize_event(np.random.default_rng(seed), kind, **params)


def band_energy(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Energy per channel of ``x`` (channels, n) between ``lo`` and ``hi`` Hz."""
    f = np.fft.rfftfreq(x.shape[-1], 1.0 / FS)
    spec = np.abs(np.fft.rfft(x, axis=-1)) ** 2
    return spec[..., (f >= lo) & (f < hi)].sum(axis=-1)


def highpass(x: np.ndarray, corner_hz: float) -> np.ndarray:
    f = np.fft.rfftfreq(x.shape[-1], 1.0 / FS)
    return np.fft.irfft(np.fft.rfft(x, axis=-1) * (f >= corner_hz), n=x.shape[-1], axis=-1)


def seconds(meta: dict, key: str) -> float:
    return meta[key] / FS


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "set"
    return synthetic.generate_synthetic_set(
        path, n_events_per_class=6, stations_per_event=(1, 3), seed=5
    )


@pytest.fixture()
def small_default(monkeypatch, tmp_path) -> Path:
    """The default set redirected to tmp_path, with small parameters."""
    monkeypatch.setenv(synthetic.DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(synthetic, "DEFAULT_SET_PARAMS", dict(SMALL_SET))
    return tmp_path / synthetic.DEFAULT_SET_NAME


# --------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", synthetic.DEFAULT_CLASSES)
def test_same_seed_same_record_and_different_seed_different(kind):
    a, meta_a = event(11, kind)
    b, meta_b = event(11, kind)
    c, _ = event(12, kind)
    assert a.dtype == np.float32 and a.shape == (3, 3000)
    np.testing.assert_array_equal(a, b)
    assert meta_a.keys() == meta_b.keys()
    for key in meta_a:
        assert meta_a[key] == meta_b[key] or (np.isnan(meta_a[key]) and np.isnan(meta_b[key]))
    assert not np.array_equal(a, c)


def test_set_is_reproducible_from_its_seed(tmp_path):
    params = dict(n_events_per_class=3, stations_per_event=(1, 2), duration_s=12.0)
    a = synthetic.generate_synthetic_set(tmp_path / "a", seed=3, **params)
    b = synthetic.generate_synthetic_set(tmp_path / "b", seed=3, **params)
    c = synthetic.generate_synthetic_set(tmp_path / "c", seed=4, **params)
    meta_a, meta_b = pd.read_csv(a / "metadata.csv"), pd.read_csv(b / "metadata.csv")
    pd.testing.assert_frame_equal(meta_a, meta_b)
    with h5py.File(a / "waveforms.hdf5") as ha, h5py.File(b / "waveforms.hdf5") as hb:
        for name in meta_a.trace_name:
            np.testing.assert_array_equal(ha["data"][name][()], hb["data"][name][()])
    meta_c = pd.read_csv(c / "metadata.csv")
    with h5py.File(a / "waveforms.hdf5") as ha, h5py.File(c / "waveforms.hdf5") as hc:
        shared = sorted(set(meta_a.trace_name) & set(meta_c.trace_name))
        differs = [not np.array_equal(ha["data"][n][()], hc["data"][n][()]) for n in shared]
    assert not shared or all(differs)
    assert not meta_a.drop(columns="trace_name").equals(meta_c.drop(columns="trace_name"))


def test_a_larger_set_starts_with_the_same_events(tmp_path):
    small = synthetic.generate_synthetic_set(tmp_path / "s", n_events_per_class=2, duration_s=12.0)
    large = synthetic.generate_synthetic_set(tmp_path / "l", n_events_per_class=4, duration_s=12.0)
    meta_s, meta_l = pd.read_csv(small / "metadata.csv"), pd.read_csv(large / "metadata.csv")
    assert set(meta_s.trace_name) < set(meta_l.trace_name)
    with h5py.File(small / "waveforms.hdf5") as hs, h5py.File(large / "waveforms.hdf5") as hl:
        for name in meta_s.trace_name:
            np.testing.assert_array_equal(hs["data"][name][()], hl["data"][name][()])


# --------------------------------------------------------------------------------------------
# SeisBench layout and metadata
# --------------------------------------------------------------------------------------------


def test_set_has_seisbench_layout(small_set):
    meta = pd.read_csv(small_set / "metadata.csv")
    assert set(REQUIRED_COLUMNS) <= set(meta.columns)
    assert meta.trace_name.is_unique
    with h5py.File(small_set / "waveforms.hdf5") as h5:
        fmt = h5["data_format"]  # datasets in the group, where SeisBench reads them
        assert fmt["component_order"][()] == b"ZNE"
        assert fmt["dimension_order"][()] == b"CW"
        assert float(fmt["sampling_rate"][()]) == FS
        assert set(h5["data"].keys()) == set(meta.trace_name)
        for row in meta.itertuples():
            data = h5["data"][row.trace_name]
            assert data.dtype == np.float32
            assert data.shape == (3, row.trace_npts) == (3, 3000)
    assert (meta.station_network_code == "SY").all()
    assert (meta.trace_channel == "HH").all()
    assert (meta.trace_components == "ZNE").all()
    assert (meta.trace_sampling_rate_hz == FS).all()
    assert sorted(meta.source_type.unique()) == sorted(synthetic.DEFAULT_CLASSES)
    stamp = synthetic.read_stamp(small_set)
    assert stamp["generator_version"] == synthetic.GENERATOR_VERSION
    assert stamp["layout_version"] == synthetic.LAYOUT_VERSION
    assert stamp["params"]["n_events_per_class"] == 6
    assert stamp["params"]["seed"] == 5


def test_set_opens_with_open_dataset(small_set):
    data = pytest.importorskip("quake.data")
    dataset = data.open_dataset(small_set)
    meta = pd.read_csv(small_set / "metadata.csv")
    assert len(dataset) == len(meta)
    assert dataset.class_names.to_list() == sorted(synthetic.DEFAULT_CLASSES)
    waveform, row = dataset.get_sample(0)
    with h5py.File(small_set / "waveforms.hdf5") as h5:
        np.testing.assert_array_equal(waveform, h5["data"][row["trace_name"]][()])


def test_stations_of_an_event_share_its_source_id(small_set):
    meta = pd.read_csv(small_set / "metadata.csv")
    for source_id, group in meta.groupby("source_id"):
        assert 1 <= len(group) <= 3
        assert group.source_type.nunique() == 1
        assert group.station_code.is_unique, source_id
        assert group.source_magnitude.nunique(dropna=False) == 1
        assert group.source_depth_km.nunique(dropna=False) == 1
    assert (meta.groupby("source_type").source_id.nunique() == 6).all()
    assert meta.groupby("source_id").size().max() > 1  # some events have several stations


def test_stations_per_event_is_respected(tmp_path):
    path = synthetic.generate_synthetic_set(
        tmp_path / "set", n_events_per_class=3, stations_per_event=(2, 2), duration_s=12.0
    )
    meta = pd.read_csv(path / "metadata.csv")
    assert (meta.groupby("source_id").size() == 2).all()
    assert len(meta) == 3 * 3 * 2


def test_noise_has_no_picks_and_events_have_them(small_set):
    meta = pd.read_csv(small_set / "metadata.csv")
    noise = meta[meta.source_type == "noise"]
    events = meta[meta.source_type != "noise"]
    for column in ["trace_p_arrival_sample", "trace_s_arrival_sample", "trace_snr_db"]:
        assert noise[column].isna().all()
        assert events[column].notna().all()
    p_seconds = events.trace_p_arrival_sample / FS
    assert p_seconds.between(*synthetic.P_ARRIVAL_RANGE_S).all()
    assert (events.trace_s_arrival_sample > events.trace_p_arrival_sample).all()
    assert events.path_ep_distance_km.between(*synthetic.DISTANCE_RANGE_KM).all()
    assert events.trace_snr_db.between(*synthetic.SNR_RANGE_DB).all()


def test_no_nan_anywhere_in_the_set(small_set):
    meta = pd.read_csv(small_set / "metadata.csv")
    with h5py.File(small_set / "waveforms.hdf5") as h5:
        for name in meta.trace_name:
            assert np.isfinite(h5["data"][name][()]).all(), name


def test_mess_is_present_but_never_nan():
    rng = np.random.default_rng(0)
    dead, gappy, spiky = 0, 0, 0
    for i in range(300):
        kind = synthetic.DEFAULT_CLASSES[i % 3]
        params = {} if kind == "noise" else dict(distance_km=50, magnitude=2, depth_km=5, snr_db=10)
        x, _ = synthetic.synthesize_event(rng, kind, duration_s=12.0, **params)
        assert np.isfinite(x).all()
        flat = (x == 0).all(axis=1)
        dead += bool(flat.any())
        zero_run = (x == 0).all(axis=0)
        gappy += bool(zero_run.sum() >= 20 and not flat.any())
        hp = highpass(x, 1.0)
        spiky += bool((np.abs(hp) > 12 * hp.std(axis=1, keepdims=True)).any())
    assert 1 <= dead <= 30  # ~3%
    assert 1 <= gappy <= 40  # ~5%
    assert spiky >= 10  # spikes in events and noise transients


def test_s_falls_inside_the_training_window_up_to_the_largest_distance():
    window_start_before_p_s, window_s = 2.0, 20.48
    far = max(synthetic.DISTANCE_RANGE_KM)
    for seed in range(10):
        x, meta = event(seed, "earthquake", distance_km=far, depth_km=20.0)
        window_end = meta["trace_p_arrival_sample"] + (window_s - window_start_before_p_s) * FS
        assert meta["trace_s_arrival_sample"] < window_end - 2 * FS
        assert window_end <= x.shape[1]


# --------------------------------------------------------------------------------------------
# Physics that a seismologist would check
# --------------------------------------------------------------------------------------------


def test_s_minus_p_time_grows_with_distance_in_picks_and_envelopes():
    distances = np.array([10.0, 35.0, 60.0, 85.0, 110.0])
    picked, observed = [], []
    for d in distances:
        picks, onsets = [], []
        for seed in range(6):
            x, meta = event(seed, "earthquake", distance_km=d, magnitude=2.5, snr_db=30.0)
            p = seconds(meta, "trace_p_arrival_sample")
            picks.append(seconds(meta, "trace_s_arrival_sample") - p)
            # S onset from the data: first time the smoothed horizontal energy reaches half its
            # maximum, searching after the P onset.
            energy = np.convolve(x[1] ** 2 + x[2] ** 2, np.ones(50) / 50, mode="same")
            start = int((p + 0.5) * FS)
            after = energy[start:]
            onsets.append(np.argmax(after >= 0.5 * after.max()) / FS + 0.5)
        picked.append(np.mean(picks))
        observed.append(np.median(onsets))
    picked, observed = np.array(picked), np.array(observed)
    assert np.all(np.diff(picked) > 0)
    assert np.all(np.diff(observed) > 0)
    np.testing.assert_allclose(observed, picked, atol=2.0)
    slope = np.polyfit(distances, picked, 1)[0]
    assert 1 / 10 < slope < 1 / 7  # vp ~ 6 km/s, vs ~ 3.5 km/s: S-P ~ d / 8.4 s


def _s_window_ratios(kind: str, seeds: range, **kwargs) -> tuple[float, float]:
    """Mean (horizontal/vertical energy in the S window, S-window/P-window energy)."""
    hv, s_over_p = [], []
    for seed in seeds:
        x, meta = event(seed, kind, **kwargs)
        p = int(meta["trace_p_arrival_sample"])
        s = int(meta["trace_s_arrival_sample"])
        hp = highpass(x.astype(float), 1.0)
        s_win, p_win = hp[:, s : s + int(3 * FS)], hp[:, p : p + int(2 * FS)]
        s_energy = (s_win**2).sum(axis=1)
        hv.append((s_energy[1] + s_energy[2]) / (2 * s_energy[0]))
        s_over_p.append(s_energy.sum() / (p_win**2).sum())
    return float(np.mean(hv)), float(np.mean(s_over_p))


def test_earthquake_s_is_strong_and_horizontal_explosion_s_is_weak():
    kwargs = dict(distance_km=60.0, magnitude=2.0, snr_db=30.0)
    eq_hv, eq_sp = _s_window_ratios("earthquake", range(12), depth_km=10.0, **kwargs)
    ex_hv, ex_sp = _s_window_ratios("explosion", range(12), depth_km=0.2, **kwargs)
    assert eq_hv > 1.5 * ex_hv
    assert eq_sp > 3.0 * ex_sp


def _low_frequency_share(kind: str, depth_km: float) -> float:
    shares = []
    for seed in range(10):
        x, meta = event(seed, kind, distance_km=25.0, magnitude=2.0, depth_km=depth_km)
        p = int(meta["trace_p_arrival_sample"])
        z = x[:1, p : p + int(16 * FS)].astype(float)
        shares.append(band_energy(z, 0.5, 2.0)[0] / band_energy(z, 0.5, 20.0)[0])
    return float(np.mean(shares))


def test_shallow_explosions_carry_more_low_frequency_rg_energy():
    explosion = _low_frequency_share("explosion", depth_km=0.1)
    earthquake = _low_frequency_share("earthquake", depth_km=10.0)
    assert explosion > 2.0 * earthquake


def test_rg_arrives_after_s_at_surface_wave_speed():
    d = 40.0
    arrivals = []
    for seed in range(6):
        x, meta = event(seed, "explosion", distance_km=d, depth_km=0.05, magnitude=2.0)
        p = seconds(meta, "trace_p_arrival_sample")
        z = np.fft.rfft(x[0].astype(float))
        f = np.fft.rfftfreq(x.shape[1], 1 / FS)
        low = np.fft.irfft(z * ((f > 0.5) & (f < 2.0)), n=x.shape[1])
        envelope = np.convolve(low**2, np.ones(100) / 100, mode="same")
        arrivals.append(np.argmax(envelope) / FS - (p - d / synthetic.VP_KM_S))
    velocity = d / np.median(arrivals)
    assert 2.2 < velocity < 3.3  # slower than S (3.5 km/s): a surface wave


def _p_spectral_centroid(magnitude: float, distance_km: float) -> float:
    centroids = []
    for seed in range(8):
        x, meta = event(
            seed, "earthquake", distance_km=distance_km, magnitude=magnitude, snr_db=30.0
        )
        p = int(meta["trace_p_arrival_sample"])
        z = x[0, p : p + int(1.5 * FS)].astype(float)
        f = np.fft.rfftfreq(z.size, 1 / FS)
        power = np.abs(np.fft.rfft(z * np.hanning(z.size))) ** 2
        band = (f >= 1.0) & (f <= 45.0)
        centroids.append(np.sum(f[band] * power[band]) / np.sum(power[band]))
    return float(np.mean(centroids))


def test_corner_frequency_falls_with_magnitude():
    assert synthetic.corner_frequency_hz(1.0, "earthquake") > synthetic.corner_frequency_hz(
        3.0, "earthquake"
    )
    assert _p_spectral_centroid(1.0, 15.0) > 1.3 * _p_spectral_centroid(3.5, 15.0)


def test_attenuation_removes_high_frequencies_with_distance():
    assert _p_spectral_centroid(1.5, 8.0) > 1.2 * _p_spectral_centroid(1.5, 110.0)


def _first_motions(kind: str) -> np.ndarray:
    """Z amplitude at the P pick, in units of the pre-event noise."""
    values = []
    for seed in range(10):
        x, meta = event(seed, kind, snr_db=30.0, distance_km=20.0, depth_km=0.2)
        p = int(meta["trace_p_arrival_sample"])
        z = x[0].astype(float)
        values.append((z[p] - np.median(z[p - 100 : p])) / z[p - 100 : p].std())
    return np.array(values)


def test_explosion_first_motion_is_compressional_earthquakes_either_way():
    assert (_first_motions("explosion") > 5).all()
    earthquake = _first_motions("earthquake")
    assert (earthquake > 5).any() and (earthquake < -5).any()


def test_snr_controls_how_far_the_event_stands_above_the_pre_event_noise():
    ratios = []
    for snr_db in [0.0, 10.0, 20.0, 30.0]:
        values = []
        for seed in range(6):
            x, meta = event(seed, "earthquake", snr_db=snr_db, distance_km=30.0)
            p = int(meta["trace_p_arrival_sample"])
            s = int(meta["trace_s_arrival_sample"])
            hp = highpass(x.astype(float), 1.0)
            signal = (hp[:, p : s + int(4 * FS)] ** 2).mean()
            noise = (hp[:, : p - 20] ** 2).mean()
            values.append(signal / noise)
        ratios.append(np.median(values))
    assert np.all(np.diff(ratios) > 0)
    assert ratios[0] > 1.3  # even at 0 dB the event is there ...
    assert ratios[0] < 5.0  # ... but barely


def test_noise_records_are_not_just_quiet():
    peaky = 0
    for seed in range(40):
        x, _ = event(seed, "noise")
        hp = highpass(x.astype(float), 1.0)
        peaky += bool((np.abs(hp) > 7 * hp.std(axis=1, keepdims=True)).any())
    assert 8 <= peaky <= 32  # about half carry a transient


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"event_type": "quarry blast"}, "event_type must be one of"),
        ({"distance_km": 0.0}, "distance_km must be a finite number > 0, got 0.0"),
        ({"distance_km": None}, "distance_km must be a finite number > 0, got None"),
        ({"magnitude": float("nan")}, "magnitude must be a finite number, got nan"),
        ({"depth_km": -1.0}, "depth_km must be a finite number >= 0, got -1.0"),
        ({"snr_db": None}, "snr_db must be a finite number"),
        ({"sampling_rate_hz": 0}, "sampling_rate_hz must be a finite number > 0, got 0"),
        ({"duration_s": 5.0}, "duration_s must be >= 10.0 s, got 5.0"),
    ],
)
def test_synthesize_event_rejects_bad_arguments(kwargs, match):
    params = dict(
        event_type="earthquake", distance_km=30.0, magnitude=2.0, depth_km=5.0, snr_db=10.0
    )
    params.update(kwargs)
    event_type = params.pop("event_type")
    with pytest.raises(ValueError, match=match):
        synthetic.synthesize_event(np.random.default_rng(0), event_type, **params)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_events_per_class": 0}, "n_events_per_class must be an integer >= 1, got 0"),
        ({"n_events_per_class": 2.5}, "n_events_per_class must be an integer >= 1, got 2.5"),
        ({"stations_per_event": (2, 1)}, r"stations_per_event must satisfy .* got \(2, 1\)"),
        ({"stations_per_event": (0, 1)}, r"stations_per_event must satisfy .* got \(0, 1\)"),
        ({"stations_per_event": 3}, "stations_per_event must be a \\(min, max\\) pair"),
        ({"sampling_rate_hz": -100.0}, "sampling_rate_hz must be a finite number > 0"),
        ({"duration_s": 9.0}, "duration_s must be >= 10.0 s, got 9.0"),
    ],
)
def test_generate_synthetic_set_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic.generate_synthetic_set(tmp_path / "set", **kwargs)
    assert not (tmp_path / "set").exists()


def test_existing_set_is_kept_unless_overwrite(tmp_path):
    path = synthetic.generate_synthetic_set(tmp_path / "set", **SMALL_SET)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        synthetic.generate_synthetic_set(path, **SMALL_SET)
    synthetic.generate_synthetic_set(path, **{**SMALL_SET, "seed": 9}, overwrite=True)
    assert synthetic.read_stamp(path)["params"]["seed"] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no staging left behind


# --------------------------------------------------------------------------------------------
# The embedded default set
# --------------------------------------------------------------------------------------------


def _identity(path: Path) -> tuple[int, int]:
    stat = os.stat(path / "waveforms.hdf5")
    return stat.st_ino, stat.st_mtime_ns


def test_default_data_dir_prefers_env_then_the_checkout(monkeypatch, tmp_path):
    monkeypatch.setenv(synthetic.DATA_DIR_ENV, str(tmp_path))
    assert synthetic.default_data_dir() == tmp_path
    monkeypatch.delenv(synthetic.DATA_DIR_ENV)
    repo = Path(synthetic.__file__).resolve().parents[2]
    expected = repo / "data" if (repo / "data").is_dir() else Path.home() / ".cache" / "quake"
    assert synthetic.default_data_dir() == expected


def test_default_set_is_generated_once_then_reused(small_default, caplog):
    with caplog.at_level(logging.INFO, logger="quake.data.synthetic"):
        path = synthetic.default_dataset_path()
    assert path == small_default
    assert "generating the default synthetic set" in caplog.text
    assert "missing" in caplog.text
    expected = {**SMALL_SET, "stations_per_event": list(SMALL_SET["stations_per_event"])}
    assert synthetic.read_stamp(path)["params"] == expected
    before = _identity(path)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="quake.data.synthetic"):
        assert synthetic.default_dataset_path() == path
    assert _identity(path) == before
    assert "generating" not in caplog.text


def test_default_set_is_regenerated_when_deleted(small_default):
    path = synthetic.default_dataset_path()
    meta_before = pd.read_csv(path / "metadata.csv")
    (path / "waveforms.hdf5").unlink()
    synthetic.default_dataset_path()
    pd.testing.assert_frame_equal(pd.read_csv(path / "metadata.csv"), meta_before)
    assert (path / "waveforms.hdf5").is_file()


def test_default_set_is_regenerated_when_stale_or_asked(small_default, monkeypatch, caplog):
    path = synthetic.default_dataset_path()
    before = _identity(path)
    monkeypatch.setitem(synthetic.DEFAULT_SET_PARAMS, "seed", 1)
    with caplog.at_level(logging.INFO, logger="quake.data.synthetic"):
        synthetic.default_dataset_path()
    assert "stale" in caplog.text
    assert synthetic.read_stamp(path)["params"]["seed"] == 1
    assert _identity(path) != before
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    synthetic.default_dataset_path()
    assert synthetic.read_stamp(path)["generator_version"] == synthetic.GENERATOR_VERSION
    before = _identity(path)  # a set of an older layout (data_format as attributes) is rewritten
    monkeypatch.setattr(synthetic, "LAYOUT_VERSION", synthetic.LAYOUT_VERSION + 1)
    synthetic.default_dataset_path()
    assert synthetic.read_stamp(path)["layout_version"] == synthetic.LAYOUT_VERSION
    assert _identity(path) != before
    before = _identity(path)
    synthetic.default_dataset_path(regenerate=True)
    assert _identity(path) != before


def test_concurrent_callers_get_one_complete_set(small_default, caplog):
    results, errors = [], []

    def call():
        try:
            results.append(synthetic.default_dataset_path())
        except Exception as err:  # reported below
            errors.append(err)

    with caplog.at_level(logging.INFO, logger="quake.data.synthetic"):
        threads = [threading.Thread(target=call) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors
    assert results == [small_default] * 3
    assert caplog.text.count("generating the default synthetic set") == 1
    meta = pd.read_csv(small_default / "metadata.csv")
    with h5py.File(small_default / "waveforms.hdf5") as h5:
        assert set(h5["data"].keys()) == set(meta.trace_name)
