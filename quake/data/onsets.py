"""Where the first arrivals lie when a set gives origin times but no P picks.

A catalog + miniSEED set usually has no picks: windows start ``pre_arrival_s`` before the
origin time, and whether they hold the P and the S waves depends on the distances present. This
survey reads a longer stretch around each anchor (``SURVEY_BEFORE_S`` before to
``SURVEY_AFTER_S`` after), finds the first STA/LTA trigger on the vertical component (obspy's
classic STA/LTA, 2-15 Hz) and reports the delays after the origin time. The S delay is
estimated as ``VP_VS`` times the P delay (a crustal Vp/Vs with the origin time as zero), so the
survey says which share of the recordings has P, and S, inside a window of a given length.
Training writes it into the report (``data.onset_survey`` in metrics.json).

The same detector checks labels (:func:`peak_sta_lta`, ``scripts/check_noise_windows.py``): a
window labelled noise that triggers it holds an arrival, often another event recorded in the
"noise before the event" a set was cut from.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass

import numpy as np

from quake.data.adapter import WaveformDataAdapter

logger = logging.getLogger(__name__)

SURVEY_BEFORE_S = 30.0  # the LTA needs quiet data before the onset
SURVEY_AFTER_S = 60.0
STA_S, LTA_S = 0.5, 10.0
TRIGGER_ON, TRIGGER_OFF = 4.0, 1.5
BAND_HZ = (2.0, 15.0)
LABEL_CHECK_LTA_S = 5.0  # a model window is ~20 s: a 10 s LTA would leave half of it unseen
VP_VS = 1.73
PICK_COLUMN = "trace_p_arrival_sample"


@dataclass
class OnsetSurvey:
    """Delays (s) of the first STA/LTA trigger after the origin time, NaN where none."""

    delays_s: np.ndarray
    window_start_s: float  # the training window, relative to the origin time
    window_end_s: float

    @property
    def n_found(self) -> int:
        return int(np.isfinite(self.delays_s).sum())

    def inside(self, end_s: float) -> tuple[float, float]:
        """Shares of the traces with a trigger whose P, and whose estimated S, arrive before
        ``end_s`` seconds after the origin time."""
        found = self.delays_s[np.isfinite(self.delays_s)]
        if not len(found):
            return float("nan"), float("nan")
        return float(np.mean(found < end_s)), float(np.mean(found * VP_VS < end_s))

    def to_dict(self) -> dict:
        found = self.delays_s[np.isfinite(self.delays_s)]
        p_share, s_share = self.inside(self.window_end_s)
        quantiles = (
            {f"p{q}": round(float(np.percentile(found, q)), 2) for q in (10, 50, 90)}
            if len(found)
            else {}
        )
        return {
            "n_traces": int(len(self.delays_s)),
            "n_with_trigger": self.n_found,
            "p_delay_s": quantiles,
            "window_s": [self.window_start_s, self.window_end_s],
            "share_p_inside": round(p_share, 3),
            "share_s_inside": round(s_share, 3),
            "vp_vs": VP_VS,
            "method": f"classic STA/LTA {STA_S:g}/{LTA_S:g} s, on {TRIGGER_ON:g} / off "
            f"{TRIGGER_OFF:g}, {BAND_HZ[0]:g}-{BAND_HZ[1]:g} Hz, vertical component",
        }

    def describe(self) -> str:
        d = self.to_dict()
        if not self.n_found:
            return f"no STA/LTA trigger in any of {d['n_traces']} recordings"
        q = d["p_delay_s"]
        return (
            f"first arrivals (STA/LTA) in {d['n_with_trigger']} of {d['n_traces']} recordings: "
            f"{q['p10']:g} / {q['p50']:g} / {q['p90']:g} s after the origin time (10 / 50 / 90 %); "
            f"the window ({self.window_start_s:g} to {self.window_end_s:g} s) holds the P of "
            f"{100 * d['share_p_inside']:.0f} % and the S (Vp/Vs {VP_VS}) of "
            f"{100 * d['share_s_inside']:.0f} % of them"
        )


def needs_survey(metadata) -> bool:
    """True when fewer than half of the traces carry a P pick (windows follow origin times)."""
    if PICK_COLUMN not in metadata:
        return True
    return float(metadata[PICK_COLUMN].notna().mean()) < 0.5


def sta_lta(trace: np.ndarray, sampling_rate_hz: float, lta_s: float) -> np.ndarray:
    """obspy's classic STA/LTA (``STA_S`` / ``lta_s``) of one trace, demeaned and band-passed to
    :data:`BAND_HZ` (4 corners, causal); zeros over the first ``lta_s`` seconds."""
    from obspy.signal.filter import bandpass
    from obspy.signal.trigger import classic_sta_lta

    fs = float(sampling_rate_hz)
    high = min(BAND_HZ[1], 0.45 * fs)
    filtered = bandpass(trace - trace.mean(), BAND_HZ[0], high, fs, corners=4, zerophase=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return classic_sta_lta(filtered, int(STA_S * fs), int(lta_s * fs))


def first_trigger_delays(z: np.ndarray, sampling_rate_hz: float, before_s: float) -> np.ndarray:
    """``(N, n)`` vertical traces starting ``before_s`` before the origin -> ``(N,)`` delay (s)
    of the first trigger at or after 2 s before the origin, NaN where none."""
    from obspy.signal.trigger import trigger_onset

    fs = float(sampling_rate_hz)
    earliest = int((before_s - 2.0) * fs)
    out = np.full(len(z), np.nan)
    for i, trace in enumerate(np.asarray(z, dtype=np.float64)):
        if not np.any(trace):
            continue
        ratio = sta_lta(trace, fs, LTA_S)
        onsets = [
            int(on) for on, _ in trigger_onset(ratio, TRIGGER_ON, TRIGGER_OFF) if on >= earliest
        ]
        if onsets:
            out[i] = onsets[0] / fs - before_s
    return out


def peak_sta_lta(
    windows: np.ndarray, sampling_rate_hz: float, lta_s: float = LABEL_CHECK_LTA_S
) -> np.ndarray:
    """``(N, C, n)`` windows -> ``(N,)`` the largest classic STA/LTA ratio (``STA_S`` / ``lta_s``,
    :data:`BAND_HZ`) over their live components, after the first ``lta_s`` seconds (an arrival
    before then is not seen); 0 where none is live. A noise window above about 6 holds an
    arrival (another event, a burst)."""
    fs = float(sampling_rate_hz)
    lta = int(lta_s * fs)
    out = np.zeros(len(windows))
    for i, window in enumerate(np.asarray(windows, dtype=np.float64)):
        for trace in window:
            if trace.max() == trace.min() or trace.size <= lta:
                continue
            out[i] = max(out[i], float(sta_lta(trace, fs, lta_s)[lta:].max()))
    return out


def survey_onsets(dataset, config, max_traces: int = 2000, seed: int = 0) -> OnsetSurvey | None:
    """The survey of the module doc for a set read with ``config`` (a PreprocessConfig), on at
    most ``max_traces`` random traces; None when the set has P picks (windows follow them)."""
    if not needs_survey(dataset.metadata):
        return None
    long = dataclasses.replace(
        config,
        window_s=SURVEY_BEFORE_S + SURVEY_AFTER_S,
        pre_arrival_s=SURVEY_BEFORE_S,
        offset_s=0.0,
    )
    if len(dataset) > max_traces:  # a sample, drawn before anything is read
        rng = np.random.default_rng(seed)
        dataset = dataset.filter(np.sort(rng.choice(len(dataset), max_traces, replace=False)))
    adapter = WaveformDataAdapter(dataset, config=long)
    if not len(adapter):
        return None
    z = adapter.get_waveforms(np.arange(len(adapter)))[:, 0]
    delays = first_trigger_delays(z, long.sampling_rate_hz, SURVEY_BEFORE_S)
    start = config.offset_s - config.pre_arrival_s
    return OnsetSurvey(delays, start, start + config.window_s)
