"""Augmentations that fit seismology, on whole batches (no per-sample Python loop).

Waveform augmentations act on ``(B, 3, n)`` windows before the spectrogram; masking acts on
``(B, 3, F, T)`` spectrograms after it. Each augmentation is a small callable whose constructor
validates its arguments and whose ``str`` says what it does; randomness comes from one
``torch.Generator`` so that a run is reproducible from its seed.

Amplitude scaling is offered, but the adapter z-scores every channel of every trace, which undoes
any gain: it only changes something when ZSCORE is switched off. The signal-to-noise ratio is
what varies between real recordings, and :class:`AddRealNoise` varies exactly that.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


# Random numbers are drawn on the CPU generator and then moved to the batch's device: the same
# seed gives the same augmentation on a GPU, and one CPU generator serves every device.
def _rand(*size: int, generator: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(*size, generator=generator).to(device)


def _randint(low: int, high: int, size: tuple[int, ...], generator, device) -> torch.Tensor:
    return torch.randint(low, high, size, generator=generator).to(device)


def _chosen(batch: int, prob: float, generator: torch.Generator | None, device) -> torch.Tensor:
    return _rand(batch, generator=generator, device=device) < prob


class TimeShift:
    """Move each window by a random whole number of samples in ``[-max_shift, max_shift]``.

    The shift is circular: what leaves one end comes back at the other, so no flat zero
    stretch appears (the ends of a window are pre-event noise and coda, alike enough).
    """

    def __init__(self, max_shift_samples: int):
        if max_shift_samples < 0:
            raise ValueError(f"max_shift_samples must be >= 0, got {max_shift_samples!r}")
        self.max_shift = int(max_shift_samples)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.max_shift == 0:
            return x
        batch, channels, n = x.shape
        shift = _randint(-self.max_shift, self.max_shift + 1, (batch,), generator, x.device)
        index = (torch.arange(n, device=x.device)[None, :] - shift[:, None]) % n
        return x.gather(2, index[:, None, :].expand(batch, channels, n))

    def __str__(self) -> str:
        return f"TimeShift(max {self.max_shift} samples, circular)"


class AddRealNoise:
    """Add a recorded noise window at a random signal-to-noise ratio (in dB, per channel).

    ``noise_bank`` holds real noise windows ``(M, 3, n)`` from the training fold (noise-class
    traces or pre-event segments), never from the test fold. Channels that are all zero (a
    missing component) stay zero so that the "missing" signature is not blurred.
    """

    def __init__(self, noise_bank: torch.Tensor, prob: float, snr_db: Sequence[float]):
        _check_probability("noise prob", prob)
        if noise_bank.ndim != 3 or noise_bank.shape[0] == 0:
            raise ValueError(
                f"noise_bank must have shape (M>0, 3, n), got {tuple(noise_bank.shape)}"
            )
        if len(snr_db) != 2 or snr_db[0] > snr_db[1]:
            raise ValueError(f"snr_db must be [low, high] with low <= high, got {snr_db!r}")
        self.bank = noise_bank
        self.bank_std = noise_bank.std(dim=2, keepdim=True)
        self.prob = float(prob)
        self.snr_db = (float(snr_db[0]), float(snr_db[1]))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch = x.shape[0]
        if self.bank.shape[2] != x.shape[2]:
            raise ValueError(
                f"noise windows have {self.bank.shape[2]} samples, waveforms {x.shape[2]}"
            )
        chosen = _chosen(batch, self.prob, generator, x.device)
        pick = _randint(0, self.bank.shape[0], (batch,), generator, self.bank.device)
        noise, noise_std = self.bank[pick].to(x.device), self.bank_std[pick].to(x.device)
        low, high = self.snr_db
        snr = low + (high - low) * _rand(batch, 1, 1, generator=generator, device=x.device)
        signal_std = x.std(dim=2, keepdim=True)
        usable = (signal_std > 0) & (noise_std > 0) & chosen[:, None, None]
        scale = torch.where(
            usable, signal_std / noise_std.clamp_min(1e-12) * 10.0 ** (-snr / 20.0), 0.0
        )
        return x + noise * scale

    def __str__(self) -> str:
        return (
            f"AddRealNoise(p={self.prob}, SNR {self.snr_db[0]}..{self.snr_db[1]} dB, "
            f"{self.bank.shape[0]} noise windows)"
        )


class AmplitudeScale:
    """Multiply each channel by a gain drawn log-uniformly from ``[low, high]``."""

    def __init__(self, low: float, high: float):
        if not 0 < low <= high:
            raise ValueError(
                f"amplitude scale must satisfy 0 < low <= high, got [{low!r}, {high!r}]"
            )
        self.low, self.high = float(low), float(high)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        u = _rand(x.shape[0], x.shape[1], 1, generator=generator, device=x.device)
        log_low, log_high = torch.log(torch.tensor(self.low)), torch.log(torch.tensor(self.high))
        return x * torch.exp(log_low + (log_high - log_low) * u)

    def __str__(self) -> str:
        return f"AmplitudeScale({self.low}..{self.high})"


class ChannelDropout:
    """With probability ``prob``, remove one randomly chosen component of a window.

    A removed component is replaced as the data's ``missing_component`` policy fills a missing
    one: zeros, or a copy of Z (then only horizontals are removed). The last non-zero component
    of a window is never removed.
    """

    POLICIES = ("zeros", "copy_z")

    def __init__(self, prob: float, missing_component: str = "zeros"):
        _check_probability("channel dropout prob", prob)
        if missing_component not in self.POLICIES:
            raise ValueError(
                f"missing_component must be one of {list(self.POLICIES)}, got {missing_component!r}"
            )
        self.prob = float(prob)
        self.policy = missing_component

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, channels, _ = x.shape
        chosen = _chosen(batch, self.prob, generator, x.device)
        first = 1 if self.policy == "copy_z" else 0
        channel = _randint(first, channels, (batch,), generator, x.device)
        live = x.abs().amax(dim=2) > 0  # (B, C)
        drop = chosen & (live.sum(dim=1) > 1)
        mask = torch.zeros(batch, channels, dtype=torch.bool, device=x.device)
        mask[torch.arange(batch, device=x.device), channel] = True
        mask &= drop[:, None]
        replacement = x[:, :1].expand_as(x) if self.policy == "copy_z" else torch.zeros_like(x)
        return torch.where(mask[:, :, None], replacement, x)

    def __str__(self) -> str:
        return f"ChannelDropout(p={self.prob}, fill={self.policy})"


class SpectrogramMask:
    """SpecAugment-style masking of one random time band and one frequency band.

    A mask covers up to ``max_frac`` of the axis and is filled with the mean of that
    spectrogram channel, so it removes information without adding a new kind of value.
    """

    def __init__(
        self,
        time_prob: float,
        time_max_frac: float,
        freq_prob: float,
        freq_max_frac: float,
    ):
        _check_probability("time mask prob", time_prob)
        _check_probability("frequency mask prob", freq_prob)
        for name, value in (("time_max_frac", time_max_frac), ("freq_max_frac", freq_max_frac)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        self.time_prob, self.time_max_frac = float(time_prob), float(time_max_frac)
        self.freq_prob, self.freq_max_frac = float(freq_prob), float(freq_max_frac)

    @staticmethod
    def _band(
        batch: int, length: int, max_frac: float, prob: float, generator, device
    ) -> torch.Tensor:
        """(B, length) boolean mask of one random band per chosen sample."""
        max_width = int(length * max_frac)
        if max_width < 1 or prob == 0.0:
            return torch.zeros(batch, length, dtype=torch.bool, device=device)
        width = _randint(0, max_width + 1, (batch,), generator, device)
        start = (_rand(batch, generator=generator, device=device) * (length - width + 1)).long()
        pos = torch.arange(length, device=device)[None, :]
        band = (pos >= start[:, None]) & (pos < (start + width)[:, None])
        return band & _chosen(batch, prob, generator, device)[:, None]

    def __call__(
        self, spec: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        batch, _, n_freq, n_time = spec.shape
        time_band = self._band(
            batch, n_time, self.time_max_frac, self.time_prob, generator, spec.device
        )
        freq_band = self._band(
            batch, n_freq, self.freq_max_frac, self.freq_prob, generator, spec.device
        )
        mask = time_band[:, None, None, :] | freq_band[:, None, :, None]
        fill = spec.mean(dim=(2, 3), keepdim=True)
        return torch.where(mask, fill, spec)

    def __str__(self) -> str:
        return (
            f"SpectrogramMask(time p={self.time_prob} <= {self.time_max_frac:.0%}, "
            f"freq p={self.freq_prob} <= {self.freq_max_frac:.0%})"
        )


class Augmenter:
    """The configured waveform augmentations, then the spectrogram masking, for one fold."""

    def __init__(
        self,
        waveform_steps: Sequence,
        spectrogram_steps: Sequence,
        generator: torch.Generator | None = None,
    ):
        self.waveform_steps = list(waveform_steps)
        self.spectrogram_steps = list(spectrogram_steps)
        self.generator = generator

    @classmethod
    def from_config(
        cls,
        config,
        *,
        sampling_rate_hz: float,
        missing_component: str = "zeros",
        noise_bank: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Augmenter:
        """Build from an :class:`~quake.training.config.AugmentConfig` whose ``null`` keys were
        resolved (``config.resolved(windows_follow_picks)``); off when not enabled."""
        if not config.enabled:
            return cls([], [], generator)
        unresolved = [
            k for k, v in dataclasses.asdict(config).items() if v is None and k != "amplitude_scale"
        ]
        if unresolved:
            raise ValueError(
                f"augment keys {unresolved} are null (chosen by what the windows start at); "
                "expected AugmentConfig.resolved(windows_follow_picks) first"
            )
        steps: list = []
        max_shift = int(round(config.time_shift_s * sampling_rate_hz))
        if max_shift > 0:
            steps.append(TimeShift(max_shift))
        if config.amplitude_scale is not None:
            steps.append(AmplitudeScale(*config.amplitude_scale))
        if config.noise_prob > 0:
            if noise_bank is not None and len(noise_bank) > 0:
                steps.append(AddRealNoise(noise_bank, config.noise_prob, config.noise_snr_db))
            else:
                logger.info("no real noise windows in the training fold: noise augmentation off")
        if config.channel_dropout_prob > 0:
            steps.append(ChannelDropout(config.channel_dropout_prob, missing_component))
        spec_steps = []
        if config.time_mask_prob > 0 or config.freq_mask_prob > 0:
            spec_steps.append(
                SpectrogramMask(
                    config.time_mask_prob,
                    config.time_mask_max_frac,
                    config.freq_mask_prob,
                    config.freq_mask_max_frac,
                )
            )
        return cls(steps, spec_steps, generator)

    def waveforms(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.waveform_steps:
            x = step(x, self.generator)
        return x

    def spectrograms(self, spec: torch.Tensor) -> torch.Tensor:
        for step in self.spectrogram_steps:
            spec = step(spec, self.generator)
        return spec

    def __str__(self) -> str:
        steps = [str(s) for s in self.waveform_steps + self.spectrogram_steps]
        return " -> ".join(steps) if steps else "no augmentation"


def build_noise_bank(
    waveforms: torch.Tensor,
    labels: Sequence[int],
    indices: Sequence[int],
    noise_label: int | None,
    *,
    pre_event_samples: int = 0,
    max_windows: int = 512,
    seed: int = 0,
) -> torch.Tensor | None:
    """Real noise windows from the training traces ``indices`` only.

    Noise-class traces when the set has them; otherwise the pre-event stretch at the start of
    each window (``pre_event_samples`` long, e.g. the part before P), tiled to the window length.
    ``None`` when neither exists. At most ``max_windows`` windows, drawn with ``seed`` when
    there are more, so the bank stays small however large the set (and ``waveforms`` may be
    memory-mapped: only the chosen rows are read).
    """
    labels_t = torch.from_numpy(np.array(labels, dtype=np.int64))
    idx = torch.from_numpy(np.array(indices, dtype=np.int64))
    generator = torch.Generator().manual_seed(seed)
    if noise_label is not None:
        noise_idx = idx[labels_t[idx] == noise_label]
        if len(noise_idx) > 0:
            if len(noise_idx) > max_windows:
                noise_idx = noise_idx[
                    torch.randperm(len(noise_idx), generator=generator)[:max_windows]
                ]
            return waveforms[noise_idx].clone()
    if pre_event_samples >= 16 and len(idx) > 0:
        if len(idx) > max_windows:
            idx = idx[torch.randperm(len(idx), generator=generator)[:max_windows]]
        segment = waveforms[idx, :, :pre_event_samples]
        n = waveforms.shape[2]
        repeats = -(-n // pre_event_samples)
        return segment.repeat(1, 1, repeats)[:, :, :n].clone()
    return None
