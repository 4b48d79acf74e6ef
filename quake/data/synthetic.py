"""The embedded default set: seeded synthetic three-component records of three classes.

quake trains out of the box on this set (no download). Records are 3-component (Z, N, E) 100 Hz
velocity traces in SeisBench format, built from simple physics so that the classes differ for
reasons a seismologist would accept, and overlap enough that a model has to learn them:

- **Travel times.** Hypocentral distance ``r`` from epicentral distance and depth; P at
  ``r / 6 km/s``, S at ``r / 3.5 km/s`` (S-P about ``r / 8.4`` s). P sits 3-7 s (random) after the
  trace start, so the 20.48 s training window starting 2 s before P holds S up to ~120 km.
- **Source spectrum.** Brune omega-square model: velocity spectrum ``f / (1 + (f/fc)^2)`` with corner
  frequency ``fc = 10^(2.1 - 0.5 M)`` Hz (M1: 40 Hz, M4: 1.3 Hz), S corner ``fc / 1.5``. Explosions
  are compact sources: corner 1.6x higher for the same magnitude.
- **Attenuation.** ``exp(-pi f T / Q(f))`` with ``Q(f) = Q0 f^0.6`` over the travel time ``T`` and a
  site term ``exp(-pi kappa f)``: far records lose their high frequencies.
- **Wave trains.** Each phase is a causal direct pulse (Brune velocity pulse, polarity: up on Z for
  explosions, random for earthquakes) plus scattered energy built band by band (half-octave bands,
  0.3-40 Hz): band-limited noise times an envelope with a rise time, a ``1/t`` spreading decay and a
  Q-like coda decay ``exp(-pi f t / Qc(f))``, ``Qc(f) = 100 f^0.8``, so high frequencies die first.
- **Polarisation.** Incidence angle 10-35 deg from vertical: P mostly on Z, projected on N/E by a
  random back-azimuth. Earthquake S is mostly SH + SV on the horizontals and strong (S/P amplitude
  ratio ~3.5); explosion S is weak (S/P ~0.5), poorly polarised, with lower frequencies than its P.
- **Rg.** Shallow sources (explosions at 0-0.5 km, and some shallow earthquakes) excite a dispersive
  fundamental-mode Rayleigh train at 0.5-2 Hz, group velocity 3.0 -> 2.5 km/s (high frequencies
  later), elliptical on Z and radial, decaying with depth as ``exp(-depth / 1 km)`` and with distance
  (``Q = 60``): seen within the window out to ~75 km.
- **Noise.** Coloured background ``1/f^alpha`` (alpha 0.5-1.5), a microseism peak at 0.1-0.3 Hz
  (stronger on horizontals), sometimes a narrow cultural line at 2-15 Hz, an instrument roll-off
  near Nyquist; random overall gain. Mess, as in real archives and never NaN: occasional spikes,
  short gaps filled with zeros and a dead (all-zero) channel (5%, 4% and 3% of traces).
- **Noise class.** Pure noise windows; about 40% carry a transient (spikes, a short broadband burst,
  a machinery tremor with harmonic lines) so that "noise" is not simply "low energy".
- **SNR.** ``trace_snr_db`` is the 1-20 Hz power ratio of the signal in ``[P, S + 4 s]`` to the noise,
  all components together; it is drawn per trace in 0-30 dB, denser at high SNR, so that a minority
  of events (~8% below 5 dB) sits near the noise and the classes overlap.

The default set (:func:`default_dataset_path`) is written on first use and regenerated when missing
or when the generator version, the layout version or its parameters (a JSON stamp in the folder)
change.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from quake.data.seisbench_writer import SeisBenchWriter

logger = logging.getLogger(__name__)

DEFAULT_CLASSES: tuple[str, ...] = ("earthquake", "explosion", "noise")

#: Bump whenever the waveforms a seed produces change: a stale default set is then regenerated.
GENERATOR_VERSION = 2
#: Bump whenever the files' layout changes (2: data_format as HDF5 datasets, SeisBench's form):
#: a default set of an older layout is then rewritten.
LAYOUT_VERSION = 2
DEFAULT_SET_NAME = "synthetic-default"
#: Parameters of the embedded default set (recorded in its stamp).
DEFAULT_SET_PARAMS: dict = {
    "n_events_per_class": 250,
    "stations_per_event": (1, 2),
    "seed": 0,
    "sampling_rate_hz": 100.0,
    "duration_s": 30.0,
}
STAMP_FILE = "quake_synthetic.json"
DATA_DIR_ENV = "QUAKE_DATA_DIR"

NETWORK_CODE = "SY"
CHANNEL_CODE = "HH"
N_STATIONS = 60

VP_KM_S = 6.0
VS_KM_S = 3.5
P_ARRIVAL_RANGE_S = (3.0, 7.0)
DISTANCE_RANGE_KM = (5.0, 120.0)
SNR_RANGE_DB = (0.0, 30.0)
#: SNR = low + (high - low) * u**SNR_SKEW, u uniform: denser at high SNR, ~8% of traces below 5 dB.
SNR_SKEW = 0.7
MIN_DURATION_S = 10.0
SNR_BAND_HZ = (1.0, 20.0)

# Half-octave bands carrying the scattered energy of each phase.
_BAND_CENTRES_HZ = 0.3 * 2.0 ** (np.arange(15) / 2.0)  # 0.3 ... 38 Hz


# --------------------------------------------------------------------------------------------
# Physics helpers
# --------------------------------------------------------------------------------------------


def corner_frequency_hz(magnitude: float, event_type: str) -> float:
    """Brune P corner frequency: ``10^(2.1 - 0.5 M)``, 1.6x higher for a compact explosion."""
    fc = 10.0 ** (2.1 - 0.5 * magnitude)
    return fc * (1.6 if event_type == "explosion" else 1.0)


def _brune_velocity_spectrum(f: np.ndarray, fc: float) -> np.ndarray:
    """Amplitude of the omega-square velocity spectrum, 1 at the corner."""
    return 2.0 * (f / fc) / (1.0 + (f / fc) ** 2)


def _attenuation(f: np.ndarray, travel_time_s: float, q0: float, kappa_s: float) -> np.ndarray:
    q = q0 * np.maximum(f, 0.05) ** 0.6
    return np.exp(-np.pi * f * travel_time_s / q - np.pi * kappa_s * f)


def _band_masks(n: int, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-in-log-frequency masks (bands x rfft bins) that sum to ~1 across the bands."""
    f = np.fft.rfftfreq(n, 1.0 / fs)
    centres = _BAND_CENTRES_HZ[_BAND_CENTRES_HZ < 0.45 * fs]
    logf = np.log2(np.maximum(f, 1e-3))
    masks = np.exp(-0.5 * ((logf[None, :] - np.log2(centres)[:, None]) / 0.3) ** 2)
    total = masks.sum(axis=0)
    masks = masks / np.maximum(total, masks.max(axis=0) + 1e-12)[None, :]
    return centres, masks


def _band_noise(rng: np.random.Generator, masks: np.ndarray, n: int, n_channels: int = 3):
    """Unit-variance band-limited noise, shape (channels, bands, n)."""
    white = rng.standard_normal((n_channels, masks.shape[0], n))
    x = np.fft.irfft(np.fft.rfft(white, axis=-1) * masks[None], n=n, axis=-1)
    return x / (x.std(axis=-1, keepdims=True) + 1e-12)


def _coda_envelopes(
    t: np.ndarray, onset_s: float, rise_s: float, spread_s: float, centres: np.ndarray
) -> np.ndarray:
    """Envelope per band (bands x n): zero before onset, rise, 1/t spreading, Q-like decay."""
    lag = np.maximum(t - onset_s, 0.0)
    rise = 1.0 - np.exp(-lag / rise_s)
    spreading = 1.0 / (1.0 + lag / spread_s)
    qc = 100.0 * centres**0.8
    decay = np.exp(-np.pi * centres[:, None] * lag[None, :] / qc[:, None])
    env = (rise * spreading)[None, :] * decay
    env[:, t < onset_s] = 0.0
    return env


def _brune_pulse(t: np.ndarray, onset_s: float, fc: float) -> np.ndarray:
    """Causal Brune velocity pulse ``(1 - w t) exp(-w t)``, ``w = 2 pi fc``, peak 1 at onset."""
    w = 2.0 * np.pi * fc
    lag = t - onset_s
    pulse = np.zeros_like(t)
    after = lag >= 0
    pulse[after] = (1.0 - w * lag[after]) * np.exp(-w * lag[after])
    return pulse


def _phase_train(
    rng: np.random.Generator,
    t: np.ndarray,
    masks_info: tuple[np.ndarray, np.ndarray],
    *,
    onset_s: float,
    source_fc: float,
    travel_time_s: float,
    q0: float,
    kappa_s: float,
    rise_s: float,
    spread_s: float,
    scatter_weights: np.ndarray,
    direct_weights: np.ndarray,
    direct_amplitude: float,
) -> np.ndarray:
    """One body-wave phase on (Z, N, E): direct pulse plus scattered coda, peak ~1 before weights."""
    centres, masks = masks_info
    n = t.size
    band_amp = _brune_velocity_spectrum(centres, source_fc) * _attenuation(
        centres, travel_time_s, q0, kappa_s
    )
    band_amp = band_amp * np.sqrt(centres)  # bands widen with frequency
    band_amp = band_amp / (np.sqrt(np.sum(band_amp**2)) + 1e-12)
    env = _coda_envelopes(t, onset_s, rise_s, spread_s, centres)
    noise = _band_noise(rng, masks, n)
    scattered = np.einsum("b,cbn,bn->cn", band_amp, noise, env)
    scattered /= np.abs(scattered).max() + 1e-12
    # Attenuation broadens the direct pulse: effective corner below both fc and 1/(pi t*).
    t_star = travel_time_s / q0 + kappa_s
    fc_eff = 1.0 / (1.0 / source_fc + np.pi * t_star)
    pulse = _brune_pulse(t, onset_s, fc_eff)
    return scatter_weights[:, None] * scattered + (
        direct_amplitude * direct_weights[:, None] * pulse[None, :]
    )


def _rg_train(
    rng: np.random.Generator,
    n: int,
    fs: float,
    *,
    origin_s: float,
    distance_km: float,
    back_azimuth_rad: float,
) -> np.ndarray:
    """Dispersive Rg (Rayleigh) train on Z, N, E with unit peak: 0.5-2 Hz, slower at high frequency.

    Built on a padded length so that late arrivals run off the end instead of wrapping around.
    """
    n_pad = n + int(60.0 * fs)
    f = np.fft.rfftfreq(n_pad, 1.0 / fs)
    f0 = rng.uniform(0.7, 1.3)
    safe_f = np.maximum(f, 1e-3)
    amp = np.exp(-0.5 * (np.log(safe_f / f0) / 0.35) ** 2)
    amp *= np.exp(-np.pi * f * distance_km / (2.8 * 60.0))  # Rg attenuates fast (Q ~ 60)
    group_velocity = np.clip(3.0 - 0.25 * np.log2(safe_f / 0.5), 2.3, 3.2)
    group_delay = origin_s + distance_km / group_velocity
    phase = 2.0 * np.pi * np.cumsum(group_delay) * (f[1] - f[0])
    phase += rng.uniform(0.0, 2.0 * np.pi)
    spectrum = amp * np.exp(-1j * phase)
    vertical = np.fft.irfft(spectrum, n=n_pad)
    radial = np.fft.irfft(spectrum * 1j, n=n_pad)  # 90 deg out of phase: elliptical particle motion
    peak = max(np.abs(vertical).max(), 1e-12)
    radial = 0.7 * radial[:n] / peak
    vertical = vertical[:n] / peak
    return np.stack(
        [vertical, radial * np.cos(back_azimuth_rad), radial * np.sin(back_azimuth_rad)]
    )


def _band_power(x: np.ndarray, fs: float, band: tuple[float, float]) -> float:
    """Mean power of ``x`` (channels, n) within a frequency band, all channels together."""
    n = x.shape[-1]
    f = np.fft.rfftfreq(n, 1.0 / fs)
    spec = np.fft.rfft(x, axis=-1)
    sel = (f >= band[0]) & (f <= band[1])
    return float(2.0 * np.sum(np.abs(spec[:, sel]) ** 2) / n**2)


# --------------------------------------------------------------------------------------------
# Noise and mess
# --------------------------------------------------------------------------------------------


def _background_noise(rng: np.random.Generator, n: int, fs: float) -> np.ndarray:
    """Coloured seismic noise (3, n): 1/f^alpha background, microseism peak, optional cultural line."""
    f = np.fft.rfftfreq(n, 1.0 / fs)
    safe_f = np.maximum(f, 0.05)
    alpha = rng.uniform(0.5, 1.5)
    psd = safe_f ** (-alpha)
    f_micro = rng.uniform(0.12, 0.28)
    micro_gain = 10.0 ** rng.uniform(0.5, 2.0)
    micro = np.exp(-0.5 * (np.log10(safe_f / f_micro) / 0.12) ** 2)
    psd = psd + micro_gain * f_micro ** (-alpha) * micro
    if rng.random() < 0.3:
        f_line = rng.uniform(2.0, 15.0)
        line_gain = 10.0 ** rng.uniform(0.3, 1.3)
        psd = psd + line_gain * f_line ** (-alpha) * np.exp(-0.5 * ((f - f_line) / 0.3) ** 2)
    psd = psd / (1.0 + (f / (0.4 * fs)) ** 8)  # anti-alias roll-off
    psd[0] = 0.0
    amp = np.sqrt(psd)
    horizontal_boost = 1.0 + rng.uniform(0.0, 1.0) * micro  # microseism tilt on horizontals
    gains = np.stack([amp, amp * horizontal_boost, amp * horizontal_boost])
    white = rng.standard_normal((3, n))
    noise = np.fft.irfft(np.fft.rfft(white, axis=-1) * gains, n=n, axis=-1)
    return noise / (np.sqrt(_band_power(noise, fs, SNR_BAND_HZ) / 3.0) + 1e-12)


def _noise_transient(rng: np.random.Generator, n: int, fs: float, scale: float) -> np.ndarray:
    """A non-seismic transient for noise records: spike cluster, broadband burst or tremor."""
    t = np.arange(n) / fs
    out = np.zeros((3, n))
    kind = rng.choice(["spikes", "burst", "tremor"])
    start = rng.uniform(1.0, max(1.5, min(19.0, t[-1] - 3.0)))
    if kind == "spikes":
        for _ in range(rng.integers(1, 5)):
            i = int(min(n - 1, (start + rng.uniform(0, 2.0)) * fs))
            out[rng.integers(0, 3), i] += rng.choice([-1, 1]) * scale * rng.uniform(8, 40)
    elif kind == "burst":
        duration = rng.uniform(0.3, 3.0)
        env = np.exp(-0.5 * ((t - start - duration / 2) / (duration / 4)) ** 2)
        f = np.fft.rfftfreq(n, 1.0 / fs)
        lo, hi = sorted(rng.uniform(3.0, 0.45 * fs, size=2))
        band = ((f >= lo) & (f <= max(hi, lo + 3.0))).astype(float)
        x = np.fft.irfft(np.fft.rfft(rng.standard_normal((3, n)), axis=-1) * band, n=n, axis=-1)
        x /= x.std() + 1e-12
        comp_gain = rng.uniform(0.3, 1.0, size=3)
        out = comp_gain[:, None] * x * env[None, :] * scale * rng.uniform(2, 12)
    else:
        duration = rng.uniform(3.0, 10.0)
        f0 = rng.uniform(3.0, 12.0)
        env = np.clip((t - start) / 1.0, 0, 1) * np.clip((start + duration - t) / 1.0, 0, 1)
        x = sum(
            np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k
            for k in range(1, 4)
            if k * f0 < 0.45 * fs
        )
        comp_gain = rng.uniform(0.3, 1.0, size=3)
        out = comp_gain[:, None] * x[None, :] * env[None, :] * scale * rng.uniform(1, 5)
    return out


def _add_mess(rng: np.random.Generator, x: np.ndarray, fs: float) -> np.ndarray:
    """Spikes, short zero gaps and dead channels in a few traces (never NaN)."""
    n = x.shape[1]
    if rng.random() < 0.05:
        for _ in range(rng.integers(1, 4)):
            c, i = rng.integers(0, 3), rng.integers(0, n)
            x[c, i] += rng.choice([-1, 1]) * rng.uniform(5, 30) * (np.abs(x[c]).max() + 1e-6)
    if rng.random() < 0.04:
        for _ in range(rng.integers(1, 3)):
            length = int(rng.uniform(0.2, 3.0) * fs)
            i = rng.integers(0, max(1, n - length))
            x[:, i : i + length] = 0.0
    if rng.random() < 0.03:
        x[rng.integers(0, 3)] = 0.0
    return x


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _check_positive(name: str, value: object) -> float:
    if value is None or not np.isfinite(value) or value <= 0:  # type: ignore[arg-type]
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def synthesize_event(
    rng: np.random.Generator,
    event_type: str,
    *,
    distance_km: float | None = None,
    magnitude: float | None = None,
    depth_km: float | None = None,
    snr_db: float | None = None,
    sampling_rate_hz: float = 100.0,
    duration_s: float = 30.0,
) -> tuple[np.ndarray, dict]:
    """One 3-component record ``(3, n)`` (Z, N, E, float32) and its SeisBench metadata.

    ``event_type`` is one of :data:`DEFAULT_CLASSES`. Events need ``distance_km`` (epicentral),
    ``magnitude``, ``depth_km`` and ``snr_db``; for ``"noise"`` they are ignored and the metadata
    holds NaN. The P arrival is drawn 3-7 s after the trace start.
    """
    if event_type not in DEFAULT_CLASSES:
        raise ValueError(f"event_type must be one of {DEFAULT_CLASSES}, got {event_type!r}")
    fs = _check_positive("sampling_rate_hz", sampling_rate_hz)
    duration_s = _check_positive("duration_s", duration_s)
    if duration_s < MIN_DURATION_S:
        raise ValueError(f"duration_s must be >= {MIN_DURATION_S} s, got {duration_s!r}")
    n = int(round(duration_s * fs))
    t = np.arange(n) / fs
    noise = _background_noise(rng, n, fs)
    gain = 10.0 ** rng.uniform(0.0, 3.0)  # arbitrary instrument gain, counts
    nan = float("nan")
    meta: dict = {
        "source_type": event_type,
        "station_network_code": NETWORK_CODE,
        "trace_channel": CHANNEL_CODE,
        "trace_components": "ZNE",
        "trace_sampling_rate_hz": fs,
        "trace_npts": n,
    }

    if event_type == "noise":
        x = noise
        if rng.random() < 0.4:
            x = x + _noise_transient(rng, n, fs, scale=float(np.abs(noise).std()))
        x = _add_mess(rng, x * gain, fs)
        meta.update(
            trace_p_arrival_sample=nan,
            trace_s_arrival_sample=nan,
            source_magnitude=nan,
            source_depth_km=nan,
            path_ep_distance_km=nan,
            path_back_azimuth_deg=nan,
            trace_snr_db=nan,
        )
        return x.astype(np.float32), meta

    distance_km = _check_positive("distance_km", distance_km)
    if magnitude is None or not np.isfinite(magnitude):
        raise ValueError(f"magnitude must be a finite number, got {magnitude!r}")
    if depth_km is None or not np.isfinite(depth_km) or depth_km < 0:
        raise ValueError(f"depth_km must be a finite number >= 0, got {depth_km!r}")
    if snr_db is None or not np.isfinite(snr_db):
        raise ValueError(f"snr_db must be a finite number (dB), got {snr_db!r}")

    explosion = event_type == "explosion"
    r = float(np.hypot(distance_km, depth_km))
    tp_travel, ts_travel = r / VP_KM_S, r / VS_KM_S
    p_s = rng.uniform(*P_ARRIVAL_RANGE_S)
    p_sample = int(round(p_s * fs))
    p_s = p_sample / fs
    s_sample = int(round((p_s + ts_travel - tp_travel) * fs))
    s_s = s_sample / fs
    origin_s = p_s - tp_travel

    baz = rng.uniform(0.0, 2.0 * np.pi)
    incidence = np.deg2rad(rng.uniform(10.0, 35.0))
    radial = np.array([0.0, np.cos(baz), np.sin(baz)])
    transverse = np.array([0.0, -np.sin(baz), np.cos(baz)])
    vertical = np.array([1.0, 0.0, 0.0])
    fc = corner_frequency_hz(magnitude, event_type) * 10.0 ** rng.normal(0.0, 0.1)
    kappa = rng.uniform(0.02, 0.04)
    masks_info = _band_masks(n, fs)
    source_duration = 1.0 / fc
    path_spread = 0.004 * r

    # P: mostly vertical, compressional first motion for explosions.
    p_pol = np.abs(np.cos(incidence) * vertical + np.sin(incidence) * radial)
    p_pol = p_pol + 0.25 * np.abs(transverse)  # scattered P energy on the transverse
    polarity = 1.0 if explosion else rng.choice([-1.0, 1.0])
    p_direct = polarity * (np.cos(incidence) * vertical + np.sin(incidence) * radial)
    p_wave = _phase_train(
        rng,
        t,
        masks_info,
        onset_s=p_s,
        source_fc=fc,
        travel_time_s=tp_travel,
        q0=150.0,
        kappa_s=kappa,
        rise_s=0.05 + 0.3 * source_duration + 0.5 * path_spread,
        spread_s=0.3 + source_duration + path_spread,
        scatter_weights=p_pol,
        direct_weights=p_direct,
        direct_amplitude=rng.uniform(0.4, 1.0) if not explosion else rng.uniform(0.8, 1.2),
    )

    # S: strong and horizontal for earthquakes (shear dislocation), weak SV for explosions.
    if explosion:
        s_to_p = 10.0 ** rng.normal(np.log10(0.5), 0.12)
        sh_share = rng.uniform(0.1, 0.4)
        s_fc = fc / 2.0
        isotropic = 0.4  # converted and scattered S, not a shear source: little polarisation
    else:
        s_to_p = 10.0 ** rng.normal(np.log10(3.5), 0.12)
        sh_share = rng.uniform(0.4, 0.9)
        s_fc = fc / 1.5
        isotropic = 0.15
    sv_share = np.sqrt(1.0 - sh_share**2)
    s_pol = np.abs(
        sh_share * transverse
        + sv_share * (np.cos(incidence) * radial + 0.6 * np.sin(incidence) * vertical)
    )
    s_pol = s_pol + isotropic  # scattering puts some S energy on every component
    s_wave = _phase_train(
        rng,
        t,
        masks_info,
        onset_s=s_s,
        source_fc=s_fc,
        travel_time_s=ts_travel,
        q0=100.0,
        kappa_s=kappa,
        rise_s=0.1 + 0.4 * source_duration + path_spread,
        spread_s=0.5 + 1.5 * source_duration + 2.0 * path_spread,
        scatter_weights=s_pol / np.abs(s_pol).max(),
        direct_weights=sh_share * transverse + sv_share * radial,
        direct_amplitude=0.5 if not explosion else 0.2,
    )
    signal = p_wave + s_to_p * s_wave

    # Rg: only shallow sources excite it; it dies off with depth and distance.
    rg_excitation = np.exp(-depth_km / 1.0) * (
        10.0 ** rng.normal(np.log10(1.5), 0.15) if explosion else rng.uniform(0.3, 1.0)
    )
    if rg_excitation > 0.01:
        rg = _rg_train(rng, n, fs, origin_s=origin_s, distance_km=r, back_azimuth_rad=baz)
        rg *= np.exp(-np.pi * 1.0 * r / (2.8 * 60.0))  # distance decay at ~1 Hz
        signal = signal + rg_excitation * rg
    signal[:, t < p_s] = 0.0

    # Scale the signal to the requested SNR (1-20 Hz power in [P, S + 4 s] over the noise's).
    end = min(n, s_sample + int(4.0 * fs))
    signal_power = _band_power(signal[:, p_sample:end], fs, SNR_BAND_HZ)
    noise_power = _band_power(noise, fs, SNR_BAND_HZ)
    signal *= np.sqrt(noise_power * 10.0 ** (snr_db / 10.0) / max(signal_power, 1e-30))

    x = _add_mess(rng, (noise + signal) * gain, fs)
    meta.update(
        trace_p_arrival_sample=float(p_sample),
        trace_s_arrival_sample=float(s_sample) if s_sample < n else nan,
        source_magnitude=float(magnitude),
        source_depth_km=float(depth_km),
        path_ep_distance_km=float(distance_km),
        path_back_azimuth_deg=float(np.rad2deg(baz)),
        trace_snr_db=float(snr_db),
    )
    return x.astype(np.float32), meta


def _draw_snr_db(rng: np.random.Generator) -> float:
    low, high = SNR_RANGE_DB
    return float(low + (high - low) * rng.random() ** SNR_SKEW)


def _draw_source(rng: np.random.Generator, event_type: str) -> tuple[float, float]:
    """Magnitude and depth of one source."""
    if event_type == "explosion":
        return rng.uniform(0.8, 3.0), rng.uniform(0.0, 0.5)
    magnitude = rng.uniform(0.8, 4.0)
    depth = rng.uniform(1.0, 3.0) if rng.random() < 0.1 else rng.uniform(3.0, 20.0)
    return magnitude, depth


def _iter_records(
    n_events_per_class: int,
    stations_per_event: tuple[int, int],
    seed: int,
    fs: float,
    duration_s: float,
) -> Iterator[tuple[str, np.ndarray, dict]]:
    """Yield ``(trace_name, waveform, metadata)`` for the whole set, event by event."""
    for class_index, event_type in enumerate(DEFAULT_CLASSES):
        prefix = event_type.replace(" ", "_")
        for event_index in range(n_events_per_class):
            # One stream per event: event i is the same whatever the set's size.
            rng = np.random.default_rng([seed, class_index, event_index])
            source_id = f"syn_{prefix}_{event_index:05d}"
            n_stations = int(rng.integers(stations_per_event[0], stations_per_event[1] + 1))
            stations = rng.choice(N_STATIONS, size=n_stations, replace=False)
            magnitude, depth = _draw_source(rng, event_type)
            for station in stations:
                kwargs = {}
                if event_type != "noise":
                    kwargs = {
                        "distance_km": rng.uniform(*DISTANCE_RANGE_KM),
                        "magnitude": magnitude,
                        "depth_km": depth,
                        "snr_db": _draw_snr_db(rng),
                    }
                waveform, meta = synthesize_event(
                    rng, event_type, sampling_rate_hz=fs, duration_s=duration_s, **kwargs
                )
                station_code = f"S{station:03d}"
                meta["source_id"] = source_id
                meta["station_code"] = station_code
                yield f"{source_id}_{NETWORK_CODE}_{station_code}", waveform, meta


def _validate_set_params(
    n_events_per_class: int, stations_per_event: tuple[int, int]
) -> tuple[int, int]:
    if not isinstance(n_events_per_class, (int, np.integer)) or n_events_per_class < 1:
        raise ValueError(f"n_events_per_class must be an integer >= 1, got {n_events_per_class!r}")
    try:
        lo, hi = (int(v) for v in stations_per_event)
    except (TypeError, ValueError):
        raise ValueError(
            f"stations_per_event must be a (min, max) pair of integers, got {stations_per_event!r}"
        ) from None
    if not 1 <= lo <= hi <= N_STATIONS:
        raise ValueError(
            f"stations_per_event must satisfy 1 <= min <= max <= {N_STATIONS}, "
            f"got {stations_per_event!r}"
        )
    return lo, hi


def generate_synthetic_set(
    path: str | os.PathLike,
    *,
    n_events_per_class: int = 250,
    stations_per_event: tuple[int, int] = (1, 2),
    seed: int = 0,
    sampling_rate_hz: float = 100.0,
    duration_s: float = 30.0,
    overwrite: bool = False,
) -> Path:
    """Write the seeded synthetic set to ``path`` (SeisBench format) and return ``path``.

    Each event gets ``stations_per_event[0]..stations_per_event[1]`` station records sharing its
    ``source_id``. The folder also holds a JSON stamp of the generator version and parameters. It is
    built under a temporary name and renamed into place, so a crash leaves no half-written set.
    """
    path = Path(path)
    stations = _validate_set_params(n_events_per_class, stations_per_event)
    fs = _check_positive("sampling_rate_hz", sampling_rate_hz)
    duration_s = _check_positive("duration_s", duration_s)
    if duration_s < MIN_DURATION_S:
        raise ValueError(f"duration_s must be >= {MIN_DURATION_S} s, got {duration_s!r}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    params = _stamp_params(
        n_events_per_class=int(n_events_per_class),
        stations_per_event=stations,
        seed=int(seed),
        sampling_rate_hz=fs,
        duration_s=duration_s,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    expected = n_events_per_class * len(DEFAULT_CLASSES) * (stations[0] + stations[1]) / 2
    try:
        with SeisBenchWriter(staging, fs) as writer:
            records = _iter_records(n_events_per_class, stations, int(seed), fs, duration_s)
            for name, waveform, meta in tqdm(
                records, total=int(expected), desc="synthetic set", unit="trace", disable=None
            ):
                writer.add(name, waveform, **meta)
        (staging / STAMP_FILE).write_text(json.dumps(params, indent=2) + "\n")
        _move_into_place(staging, path, overwrite=overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("synthetic set ready at %s", path)
    return path


def _stamp_params(**params) -> dict:
    params["stations_per_event"] = list(params["stations_per_event"])
    return {
        "generator_version": GENERATOR_VERSION,
        "layout_version": LAYOUT_VERSION,
        "params": params,
    }


def _move_into_place(staging: Path, path: Path, *, overwrite: bool) -> None:
    """Rename a finished folder to ``path``; an existing set is renamed away first, then removed."""
    old = None
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} appeared while generating; pass overwrite=True")
        old = path.with_name(f".{path.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(path, old)
    try:
        os.rename(staging, path)
    except OSError as err:
        raise FileExistsError(f"could not move the new set into {path}: {err}") from err
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def read_stamp(path: str | os.PathLike) -> dict | None:
    """The generator version and parameters recorded in a synthetic set, or None if unreadable."""
    try:
        return json.loads((Path(path) / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None


def default_data_dir() -> Path:
    """Folder for generated data: ``$QUAKE_DATA_DIR`` if set, else the checkout's ``data/``
    (when the package sits in a source checkout), else ``~/.cache/quake``."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "data").is_dir() and (repo / "pyproject.toml").is_file():
        return repo / "data"
    return Path.home() / ".cache" / "quake"


def _is_current(path: Path) -> bool:
    expected = _stamp_params(**DEFAULT_SET_PARAMS)
    return (
        (path / "metadata.csv").is_file()
        and (path / "waveforms.hdf5").is_file()
        and read_stamp(path) == expected
    )


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Inter-process lock (POSIX ``flock``); without fcntl, atomic renames alone keep sets whole."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def default_dataset_path(*, regenerate: bool = False) -> Path:
    """Path of the embedded default set, generated on first use.

    The set lives in :func:`default_data_dir` as ``synthetic-default``. It is (re)generated when
    missing, when its stamp differs from the code's generator version and parameters, or when
    ``regenerate`` is true; otherwise the set on disk is reused as is. Concurrent callers serialise
    on a lock file, and the set is renamed into place only once complete.
    """
    path = default_data_dir() / DEFAULT_SET_NAME
    if not regenerate and _is_current(path):
        return path
    with _exclusive_lock(path.with_name(f".{path.name}.lock")):
        if not regenerate and _is_current(path):  # another process finished it meanwhile
            return path
        reason = "requested" if regenerate else ("stale" if path.exists() else "missing")
        logger.info(
            "generating the default synthetic set at %s (%s; %s)",
            path,
            reason,
            ", ".join(f"{k}={v}" for k, v in DEFAULT_SET_PARAMS.items()),
        )
        generate_synthetic_set(path, overwrite=True, **DEFAULT_SET_PARAMS)
    return path
