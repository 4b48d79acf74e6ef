"""Batched augmentations: what each keeps, what each changes, validation, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quake.training.augment import (
    AddRealNoise,
    AmplitudeScale,
    Augmenter,
    ChannelDropout,
    SpectrogramMask,
    TimeShift,
    build_noise_bank,
)
from quake.training.config import AugmentConfig


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_time_shift_is_a_circular_shift_per_window():
    x = torch.arange(4 * 3 * 50, dtype=torch.float32).reshape(4, 3, 50)
    y = TimeShift(10)(x, _gen())
    for b in range(4):
        shift = int(x[b, 0, 0] - y[b, 0, 0]) % 50  # y[t] = x[t - shift], circularly
        shift = shift if shift <= 25 else shift - 50
        assert abs(shift) <= 10
        assert torch.equal(y[b], torch.roll(x[b], shift, dims=1))
    assert TimeShift(0)(x, _gen()) is x


def test_added_noise_has_the_drawn_snr_and_spares_missing_channels():
    torch.manual_seed(0)
    signal = torch.randn(64, 3, 2000)
    signal[:, 2] = 0.0  # a missing E component
    bank = torch.randn(8, 3, 2000) * 7.0
    out = AddRealNoise(bank, prob=1.0, snr_db=[10.0, 10.0])(signal, _gen())
    added = out - signal
    assert torch.all(out[:, 2] == 0)  # missing stays missing
    ratio = signal[:, :2].std(dim=2) / added[:, :2].std(dim=2)
    np.testing.assert_allclose(20 * torch.log10(ratio).numpy(), 10.0, atol=0.2)
    untouched = AddRealNoise(bank, prob=0.0, snr_db=[0.0, 0.0])(signal, _gen())
    assert torch.equal(untouched, signal)


def test_channel_dropout_never_removes_the_last_live_component():
    x = torch.randn(200, 3, 30)
    x[:100, 1:] = 0.0  # vertical-only records
    y = ChannelDropout(prob=1.0)(x, _gen())
    live = y.abs().amax(dim=2) > 0
    assert torch.all(live[:100, 0])  # Z of vertical-only records kept
    assert torch.all(live[100:].sum(dim=1) == 2)  # three-component records lose exactly one
    copy = ChannelDropout(prob=1.0, missing_component="copy_z")(x[100:], _gen())
    replaced = (copy[:, 1:] == copy[:, :1]).all(dim=2)
    assert torch.all(replaced.sum(dim=1) == 1)  # one horizontal became a copy of Z


def test_spectrogram_mask_fills_bands_with_the_channel_mean():
    spec = torch.rand(16, 3, 33, 63)
    out = SpectrogramMask(1.0, 0.3, 0.0, 0.0)(spec, _gen(1))
    changed = (out != spec).any(dim=(1, 2))  # (B, T) time frames that were masked
    assert changed.any()
    assert (changed.sum(dim=1) <= int(63 * 0.3)).all()
    b, t = torch.nonzero(changed)[0]
    np.testing.assert_allclose(
        out[b, :, :, t].numpy(), spec[b].mean(dim=(1, 2))[:, None].expand(3, 33).numpy(), rtol=1e-6
    )


def test_same_seed_same_augmentation():
    bank = torch.randn(4, 3, 500)
    config = AugmentConfig(noise_prob=0.7, channel_dropout_prob=0.5).resolved(
        windows_follow_picks=False
    )
    x = torch.randn(8, 3, 500)
    a = Augmenter.from_config(config, sampling_rate_hz=100.0, noise_bank=bank, generator=_gen(3))
    b = Augmenter.from_config(config, sampling_rate_hz=100.0, noise_bank=bank, generator=_gen(3))
    assert torch.equal(a.waveforms(x), b.waveforms(x))
    assert "TimeShift" in str(a) and "AddRealNoise" in str(a)
    off = Augmenter.from_config(AugmentConfig(enabled=False), sampling_rate_hz=100.0)
    assert torch.equal(off.waveforms(x), x) and str(off) == "no augmentation"


def test_amplitude_scale_stays_in_range():
    x = torch.ones(100, 3, 10)
    y = AmplitudeScale(0.5, 2.0)(x, _gen())
    assert y.min() >= 0.5 and y.max() <= 2.0


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: TimeShift(-1), "max_shift_samples must be >= 0, got -1"),
        (lambda: AddRealNoise(torch.zeros(0, 3, 10), 0.5, [0, 1]), r"noise_bank must have shape"),
        (
            lambda: AddRealNoise(torch.zeros(2, 3, 10), 1.5, [0, 1]),
            "probability in \\[0, 1\\], got 1.5",
        ),
        (lambda: AddRealNoise(torch.zeros(2, 3, 10), 0.5, [3, 1]), "low <= high"),
        (lambda: ChannelDropout(0.1, "mean"), "missing_component must be one of"),
        (lambda: SpectrogramMask(0.5, 1.0, 0.5, 0.1), "time_max_frac must be in"),
        (lambda: AmplitudeScale(0.0, 1.0), "0 < low <= high"),
    ],
)
def test_invalid_arguments_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_noise_bank_uses_training_noise_only_or_pre_event_segments():
    waveforms = torch.arange(6, dtype=torch.float32)[:, None, None].expand(6, 3, 100).clone()
    labels = [0, 2, 2, 0, 2, 1]
    bank = build_noise_bank(waveforms, labels, [0, 1, 2, 3], noise_label=2)
    assert sorted(bank[:, 0, 0].tolist()) == [
        1.0,
        2.0,
    ]  # noise traces 1, 2; trace 4 is not training
    pre = build_noise_bank(waveforms, labels, [0, 3, 5], noise_label=None, pre_event_samples=30)
    assert pre.shape == (3, 3, 100)
    assert build_noise_bank(waveforms, labels, [0, 3], noise_label=None) is None
