"""The first-arrival survey of sets without P picks (quake.data.onsets): a trigger at a known
time on a crafted trace, and the survey of real pnw-eqex (origin times only) vs eqnoise-3c
(P picks: no survey)."""

from __future__ import annotations

import numpy as np
import pytest

from quake.data import open_dataset
from quake.data.onsets import (
    COVERING_SAMPLES,
    VP_VS,
    covering_window,
    first_trigger_delays,
    onsets_and_ends,
    peak_sta_lta,
    survey_onsets,
)
from quake.training.config import load_config


def test_a_burst_at_a_known_time_is_found():
    fs, before = 100.0, 30.0
    rng = np.random.default_rng(0)
    traces = rng.normal(0, 1, (3, int(90 * fs)))
    onset = int((before + 7.5) * fs)  # 7.5 s after the origin
    t = np.arange(int(5 * fs)) / fs
    traces[0, onset : onset + len(t)] += 30 * np.sin(2 * np.pi * 6 * t) * np.exp(-t)
    traces[2] = 0.0  # a dead channel: no trigger, no error
    delays = first_trigger_delays(traces, fs, before)
    assert delays[0] == pytest.approx(7.5, abs=0.3)
    assert np.isnan(delays[1]) and np.isnan(delays[2])  # noise alone does not trigger


def test_a_long_signal_ends_where_its_envelope_meets_the_noise():
    """A 60 s emergent signal (like a rock avalanche) starting 10 s after the origin ends about
    70 s after it; a short burst ends within seconds; a signal still going where the recording
    stops ends there."""
    fs, before = 50.0, 30.0
    rng = np.random.default_rng(1)
    traces = rng.normal(0, 1, (3, int(150 * fs)))
    t = np.arange(int(60 * fs)) / fs
    long = 8 * np.sin(2 * np.pi * 4 * t) * np.sin(np.pi * t / 60) ** 0.3
    start = int((before + 10) * fs)
    traces[0, start : start + len(t)] += long
    short = np.arange(int(3 * fs)) / fs
    traces[1, start : start + len(short)] += 30 * np.sin(2 * np.pi * 6 * short)
    cut = int((before + 50) * fs)  # the recording stops 50 s after the origin
    traces[2, start : start + len(t)] += long
    traces[2, cut:] = 0.0
    delays, ends = onsets_and_ends(traces, fs, before)
    assert delays == pytest.approx([10, 10, 10], abs=1.0)
    assert ends[0] == pytest.approx(70.0, abs=4.0)
    assert 10 < ends[1] < 16
    assert ends[2] == pytest.approx(50.0, abs=0.1)


def test_the_window_proposed_for_surface_events_covers_them(real_data_dir):
    """esec-surface: the signals outlast the 20.48 s window; the proposal keeps 4096 samples
    at a lower rate and reaches past where 90 % of them end."""
    dataset, preprocess = _set(real_data_dir / "esec-surface")
    survey = survey_onsets(dataset, preprocess, max_traces=80, seed=0)
    summary = survey.to_dict()
    assert summary["share_ending_inside"] < 0.5
    proposal = covering_window(survey, preprocess)
    settings = proposal["settings"]
    assert settings["window_s"] * settings["sampling_rate_hz"] == COVERING_SAMPLES
    assert settings["sampling_rate_hz"] <= preprocess.sampling_rate_hz
    reach = survey.window_start_s + settings["window_s"]
    assert reach >= proposal["signal_end_p90_s"] > survey.window_end_s
    # the other way: the same window, as many back to back as reach as far, and no more
    n = proposal["windows_per_recording"]
    assert survey.window_start_s + n * preprocess.window_s >= proposal["signal_end_p90_s"]
    assert survey.window_start_s + (n - 1) * preprocess.window_s < proposal["signal_end_p90_s"]
    assert "the signals end" in survey.describe()


def _set(path):
    config = load_config(None, {"data.path": str(path)})
    preprocess = config.data.preprocess_config()
    return open_dataset(path, preprocess, config.data.labels()), preprocess


def test_the_survey_of_a_set_without_picks(real_data_dir, pnw):
    dataset, preprocess = _set(pnw)
    survey = survey_onsets(dataset, preprocess)
    found = survey.delays_s[np.isfinite(survey.delays_s)]
    assert len(survey.delays_s) > 400 and len(found) > 0.5 * len(survey.delays_s)
    assert (survey.window_start_s, survey.window_end_s) == (-2.0, pytest.approx(18.48))
    summary = survey.to_dict()
    assert summary["share_p_inside"] == pytest.approx(np.mean(found < 18.48), abs=1e-3)
    assert summary["share_s_inside"] == pytest.approx(np.mean(found * VP_VS < 18.48), abs=1e-3)
    assert summary["p_delay_s"]["p50"] == pytest.approx(np.median(found), abs=0.01)
    assert "first arrivals (STA/LTA)" in survey.describe()
    assert np.all(found >= -2.0)
    picked, preprocess = _set(real_data_dir / "eqnoise-3c")
    assert survey_onsets(picked, preprocess) is None  # windows follow its P picks


def test_a_large_set_is_surveyed_on_a_sample(pnw):
    dataset, preprocess = _set(pnw)
    survey = survey_onsets(dataset, preprocess, max_traces=50, seed=3)
    assert 30 < len(survey.delays_s) <= 50  # the sample (494 in all), less what QC skips
    again = survey_onsets(dataset, preprocess, max_traces=50, seed=3)
    np.testing.assert_array_equal(survey.delays_s, again.delays_s)


def test_noise_windows_holding_an_arrival_are_found(real_data_dir, capsys):
    """eqnoise-3c: BG.NEG's 'noise' window (the 29 s before its event) holds another local
    event 10 s in; BG.ACR's does not."""
    import importlib.util
    from pathlib import Path

    from quake.data import PreprocessConfig, WaveformDataAdapter

    path = real_data_dir / "eqnoise-3c"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    config = PreprocessConfig()
    names = [
        "phasenet_BG_NEG_2011070416090892_noise",
        "phasenet_BG_ACR_2012120413330715_noise",
    ]
    dataset = open_dataset(path)
    rows = [dataset.metadata["trace_name"].tolist().index(n) for n in names]
    adapter = WaveformDataAdapter(
        dataset.filter(np.isin(np.arange(len(dataset)), rows)), config=config
    )
    order = [adapter.metadata["trace_name"].tolist().index(n) for n in names]
    ratios = peak_sta_lta(adapter.get_waveforms(order), config.sampling_rate_hz)
    assert ratios[0] > 6.0 > 4.0 > ratios[1] > 1.0
    assert (peak_sta_lta(np.zeros((1, 3, 2048)), 100.0) == 0.0).all()  # nothing live

    script = Path(__file__).parents[1] / "scripts" / "check_noise_windows.py"
    spec = importlib.util.spec_from_file_location("check_noise_windows", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "windows labelled noise reach an STA/LTA ratio of 6" in out
    assert "phasenet_BG_NEG_2011070416090892_noise" in out
    assert "phasenet_BG_ACR_2012120413330715_noise" not in out
    with pytest.raises(SystemExit):
        module.main([str(path), "--class", "explosion"])
