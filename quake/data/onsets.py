"""Where the first arrivals lie when a set gives origin times but no P picks.

A catalog + miniSEED set usually has no picks: windows start ``pre_arrival_s`` before the
origin time, and whether they hold the P and the S waves depends on the distances present. This
survey reads a longer stretch around each anchor (``SURVEY_BEFORE_S`` before to
``SURVEY_AFTER_S`` after), finds the first STA/LTA trigger on the vertical component (obspy's
classic STA/LTA, 2-15 Hz) and reports the delays after the origin time. The S delay is
estimated as ``VP_VS`` times the P delay (a crustal Vp/Vs with the origin time as zero), so the
survey says which share of the recordings has P, and S, inside a window of a given length.

It also measures where each signal ends: the last moment its envelope (RMS over
``ENVELOPE_S``, same band) stands at ``END_SNR`` times the noise before the onset. Surface events
(landslides, rock falls, avalanches) last minutes: when most signals outlast the window,
:func:`covering_window` proposes the window, and the rate that keeps its samples, that covers
them. Training writes it all into the report (``data.onset_survey`` in metrics.json).

The same detector checks labels (:func:`peak_sta_lta`, ``scripts/check_noise_windows.py``): a
window labelled noise that triggers it holds an arrival, often another event recorded in the
"noise before the event" a set was cut from.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np

from quake.data.adapter import WaveformDataAdapter

logger = logging.getLogger(__name__)

SURVEY_BEFORE_S = 30.0  # the LTA needs quiet data before the onset
SURVEY_AFTER_S = 120.0  # long enough for the signals of surface events to end
STA_S, LTA_S = 0.5, 10.0
TRIGGER_ON, TRIGGER_OFF = 4.0, 1.5
BAND_HZ = (2.0, 15.0)
LABEL_CHECK_LTA_S = 5.0  # a model window is ~20 s: a 10 s LTA would leave half of it unseen
VP_VS = 1.73
PICK_COLUMN = "trace_p_arrival_sample"
ENVELOPE_S = 2.0
END_SNR = 2.0  # envelope over noise (amplitude) that still counts as signal
#: The window :func:`covering_window` proposes keeps this many samples (33 x 64 spectrogram
#: bins with ``stft_nperseg`` = ``stft_hop`` = 64) and takes the highest of these rates that fits.
COVERING_SAMPLES = 4096
COVERING_RATES_HZ = (100.0, 64.0, 50.0, 40.0, 32.0, 25.0, 20.0, 16.0, 10.0)


@dataclass
class OnsetSurvey:
    """Delays (s) of the first STA/LTA trigger after the origin time, NaN where none."""

    delays_s: np.ndarray
    window_start_s: float  # the training window, relative to the origin time
    window_end_s: float
    # where each signal ends (s after the origin time; NaN where no trigger): the survey's end
    # when it is still going there
    ends_s: np.ndarray | None = None

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
        ends = np.asarray([] if self.ends_s is None else self.ends_s)
        ends = ends[np.isfinite(ends)]
        end_quantiles = (
            {f"p{q}": round(float(np.percentile(ends, q)), 2) for q in (10, 50, 90)}
            if len(ends)
            else {}
        )
        return {
            "n_traces": int(len(self.delays_s)),
            "n_with_trigger": self.n_found,
            "p_delay_s": quantiles,
            "signal_end_s": end_quantiles,
            "share_ending_inside": round(float(np.mean(ends <= self.window_end_s)), 3)
            if len(ends)
            else None,
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
        text = (
            f"first arrivals (STA/LTA) in {d['n_with_trigger']} of {d['n_traces']} recordings: "
            f"{q['p10']:g} / {q['p50']:g} / {q['p90']:g} s after the origin time (10 / 50 / 90 %); "
            f"the window ({self.window_start_s:g} to {self.window_end_s:g} s) holds the P of "
            f"{100 * d['share_p_inside']:.0f} % and the S (Vp/Vs {VP_VS}) of "
            f"{100 * d['share_s_inside']:.0f} % of them"
        )
        e = d["signal_end_s"]
        if e:
            text += (
                f"; the signals end {e['p10']:g} / {e['p50']:g} / {e['p90']:g} s after the "
                f"origin time (envelope back to {END_SNR:g}x the noise), "
                f"{100 * d['share_ending_inside']:.0f} % of them inside the window"
            )
        return text


def needs_survey(metadata) -> bool:
    """True when fewer than half of the traces carry a P pick (windows follow origin times)."""
    if PICK_COLUMN not in metadata:
        return True
    return float(metadata[PICK_COLUMN].notna().mean()) < 0.5


def band_passed(trace: np.ndarray, sampling_rate_hz: float) -> np.ndarray:
    """One trace demeaned and band-passed to :data:`BAND_HZ` (4 corners, causal; the upper
    corner below Nyquist): what the trigger and the envelope of this module look at."""
    from obspy.signal.filter import bandpass

    fs = float(sampling_rate_hz)
    high = min(BAND_HZ[1], 0.45 * fs)
    return bandpass(trace - trace.mean(), BAND_HZ[0], high, fs, corners=4, zerophase=False)


def sta_lta(trace: np.ndarray, sampling_rate_hz: float, lta_s: float) -> np.ndarray:
    """obspy's classic STA/LTA (``STA_S`` / ``lta_s``) of one trace, :func:`band_passed`;
    zeros over the first ``lta_s`` seconds."""
    from obspy.signal.trigger import classic_sta_lta

    fs = float(sampling_rate_hz)
    filtered = band_passed(trace, fs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return classic_sta_lta(filtered, int(STA_S * fs), int(lta_s * fs))


def first_trigger_delays(z: np.ndarray, sampling_rate_hz: float, before_s: float) -> np.ndarray:
    """``(N, n)`` vertical traces starting ``before_s`` before the origin -> ``(N,)`` delay (s)
    of the first trigger at or after 2 s before the origin, NaN where none."""
    return onsets_and_ends(z, sampling_rate_hz, before_s)[0]


def onsets_and_ends(
    z: np.ndarray, sampling_rate_hz: float, before_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(N, n)`` vertical traces starting ``before_s`` before the origin -> the delay (s) of
    each one's first trigger at or after 2 s before the origin, and where its signal ends (the
    last envelope sample at ``END_SNR`` times the noise before the onset; the last recorded
    sample when it never falls back), both relative to the origin time, NaN where no trigger."""
    from obspy.signal.trigger import trigger_onset

    fs = float(sampling_rate_hz)
    earliest = int((before_s - 2.0) * fs)
    delays, ends = np.full(len(z), np.nan), np.full(len(z), np.nan)
    for i, trace in enumerate(np.asarray(z, dtype=np.float64)):
        if not np.any(trace):
            continue
        ratio = sta_lta(trace, fs, LTA_S)
        ratio[np.flatnonzero(trace)[-1] + 1 :] = 0.0  # the zeros past the recording's end
        onsets = [
            int(on) for on, _ in trigger_onset(ratio, TRIGGER_ON, TRIGGER_OFF) if on >= earliest
        ]
        if onsets:
            delays[i] = onsets[0] / fs - before_s
            ends[i] = signal_end(trace, fs, onsets[0]) / fs - before_s
    return delays, ends


def signal_end(trace: np.ndarray, sampling_rate_hz: float, onset: int) -> int:
    """The sample where the signal that starts at ``onset`` ends (module doc)."""
    fs = float(sampling_rate_hz)
    recorded = np.flatnonzero(trace)
    last = int(recorded[-1]) if len(recorded) else len(trace) - 1
    filtered = band_passed(trace, fs)
    width = max(1, int(ENVELOPE_S * fs))
    envelope = np.sqrt(np.convolve(filtered**2, np.ones(width) / width, mode="same"))
    noise_end = max(0, onset - int(fs))
    noise = float(np.median(envelope[width:noise_end])) if noise_end > 2 * width else 0.0
    if noise <= 0:
        return last
    loud = np.flatnonzero(envelope[onset : last + 1] >= END_SNR * noise)
    return onset + int(loud[-1]) if len(loud) else onset


def covering_window(survey: OnsetSurvey, config) -> dict | None:
    """The window that holds 90 % of the surveyed signals to their end, when the window of
    ``config`` (a PreprocessConfig) does not: the same start (``pre_arrival_s`` before the
    anchor), :data:`COVERING_SAMPLES` samples, at the highest of :data:`COVERING_RATES_HZ` (and
    no higher than the current rate) that reaches that far; None when the window already does.
    ``settings``: the ``data.preprocess`` keys to set; ``windows_per_recording``: the other
    way, the windows of ``config`` that reach as far back to back."""
    ends = np.asarray([] if survey.ends_s is None else survey.ends_s)
    ends = ends[np.isfinite(ends)]
    if not len(ends):
        return None
    reach = float(np.percentile(ends, 90))
    if reach <= survey.window_end_s:
        return None
    needed = reach - survey.window_start_s
    fitting = [
        r for r in COVERING_RATES_HZ
        if r <= config.sampling_rate_hz and COVERING_SAMPLES / r >= needed
    ]  # fmt: skip
    rate = max(fitting) if fitting else min(COVERING_RATES_HZ)
    return {
        "signal_end_p90_s": round(reach, 2),
        # or the same window, several per recording back to back, as far as that
        "windows_per_recording": math.ceil(needed / config.window_s),
        "settings": {
            "window_s": COVERING_SAMPLES / rate,
            "sampling_rate_hz": rate,
            "pre_arrival_s": config.pre_arrival_s,
            "stft_nperseg": 64,
            "stft_hop": 64,
        },
    }


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
        windows_per_recording=1,
    )
    if len(dataset) > max_traces:  # a sample, drawn before anything is read
        rng = np.random.default_rng(seed)
        dataset = dataset.filter(np.sort(rng.choice(len(dataset), max_traces, replace=False)))
    adapter = WaveformDataAdapter(dataset, config=long)
    if not len(adapter):
        return None
    z = adapter.get_waveforms(np.arange(len(adapter)))[:, 0]
    delays, ends = onsets_and_ends(z, long.sampling_rate_hz, SURVEY_BEFORE_S)
    start = config.offset_s - config.pre_arrival_s
    seen = config.window_s * config.windows_per_recording  # the recording's windows together
    return OnsetSurvey(delays, start, start + seen, ends)


def covering_command(covering: dict) -> str:
    """The ``quake train`` options of a :func:`covering_window`."""
    return " ".join(
        f"--set data.preprocess.{key}={value:g}" for key, value in covering["settings"].items()
    )


def several_windows_command(covering: dict) -> str:
    """The ``quake train`` option of the other way of a :func:`covering_window`."""
    return f"--set data.preprocess.windows_per_recording={covering['windows_per_recording']}"
