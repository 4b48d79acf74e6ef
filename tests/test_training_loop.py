"""One fold's training loop: schedule, class weights, weight decay groups, pretrained fallback,
two-stage schedule and early stopping, on a tiny model and random data."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from quake.data import PreprocessConfig
from quake.models import HybridViT, PretrainedUnavailableError
from quake.runtime import resolve_precision
from quake.training.augment import Augmenter
from quake.training.config import AugmentConfig, OptimConfig
from quake.training.loop import (
    PretrainedResolver,
    class_weights,
    parameter_groups,
    train_fold,
    warmup_cosine,
)

PRE = PreprocessConfig(window_s=2.56, stft_hop=32)  # 256 samples -> (3, 33, 7)


def test_warmup_then_cosine_to_the_floor():
    factors = [warmup_cosine(s, warmup_steps=4, total_steps=20, min_ratio=0.1) for s in range(21)]
    assert factors[0] == pytest.approx(0.25) and factors[3] == pytest.approx(1.0)
    assert all(
        a >= b for a, b in zip(factors[4:], factors[5:], strict=False)
    )  # decays after warm-up
    assert factors[20] == pytest.approx(0.1)


def test_class_weights_are_inverse_frequency():
    weights = class_weights(np.array([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(weights.numpy(), [4 / 9, 4 / 3, 1.0], rtol=1e-6)


def test_no_weight_decay_on_biases_norms_and_tokens():
    model = HybridViT(depth=1, num_classes=2, img_size=PRE.spectrogram_shape[1:])
    decay, no_decay = parameter_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} >= {"cls_token", "pos_embed", "head.bias"}
    assert all(p.ndim >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.05


def test_precision_resolution():
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) in ("bf16", "fp32")


def test_pretrained_auto_falls_back_once_with_one_warning(caplog):
    calls = []

    def build(pretrained):
        calls.append(pretrained)
        raise PretrainedUnavailableError("offline")

    resolver = PretrainedResolver("auto")
    with caplog.at_level(logging.WARNING):
        assert resolver.resolve(build) is False
        assert resolver.resolve(build) is False
    assert calls == [True]  # tried once per run, not once per fold
    assert sum("PRETRAINED WEIGHTS UNAVAILABLE" in r.getMessage() for r in caplog.records) == 1
    assert "random initialisation" in resolver.status["note"]
    assert PretrainedResolver("none").resolve(build) is False


def _fit(**optim_kwargs):
    rng = np.random.default_rng(0)
    waveforms = torch.from_numpy(rng.normal(size=(40, 3, PRE.window_samples)).astype(np.float32))
    labels = np.repeat([0, 1], 20)
    waveforms[labels == 1, 0] *= 5.0  # something to learn
    torch.manual_seed(0)
    model = HybridViT(depth=1, num_classes=2, img_size=PRE.spectrogram_shape[1:])
    optim = OptimConfig(**{"epochs": 3, "batch_size": 8, "warmup_epochs": 0.0, **optim_kwargs})
    augmenter = Augmenter.from_config(
        AugmentConfig(noise_prob=0.0).resolved(windows_follow_picks=False),
        sampling_rate_hz=PRE.sampling_rate_hz,
    )
    train, val = np.r_[0:15, 20:35], np.r_[15:20, 35:40]
    return train_fold(
        waveforms, labels, train, val, model=model, optim=optim, preprocess=PRE,
        augmenter=augmenter, seed=0, device=torch.device("cpu"),
    )  # fmt: skip


def test_two_stage_schedule_freezes_then_unfreezes():
    fit = _fit(frozen_epochs=1, patience=None)
    assert [h["backbone_frozen"] for h in fit.history] == [True, False, False]
    assert 1 <= fit.best_epoch <= 3 and not fit.model.training


def test_early_stopping_and_best_checkpoint():
    fit = _fit(epochs=30, patience=1, lr=1e-6)  # a tiny lr: validation hardly moves
    assert len(fit.history) < 30
    losses = [h["val_loss"] for h in fit.history]
    assert fit.best_epoch == int(np.argmin(losses)) + 1


def test_guarded_selection_keeps_the_averaged_weights_of_a_late_epoch():
    fit = _fit(epochs=6, patience=1, min_epochs=4, selection_smoothing=2, ema_decay=0.5)
    assert len(fit.history) >= 5  # no early stop before min_epochs
    assert fit.best_epoch >= 4
    losses = [h["val_loss"] for h in fit.history]
    smoothed = [np.mean(losses[max(0, e - 2) : e]) for e in range(1, len(losses) + 1)]
    assert fit.best_epoch == 4 + int(np.argmin(smoothed[3:]))
    # the kept weights are those that were scored: the average, which no raw step reaches
    fit_raw = _fit(epochs=6, patience=1, min_epochs=4, selection_smoothing=2)
    assert not torch.equal(fit.model.cls_token, fit_raw.model.cls_token)


def test_a_non_finite_batch_is_skipped_without_poisoning_the_model():
    rng = np.random.default_rng(1)
    waveforms = torch.from_numpy(rng.normal(size=(40, 3, PRE.window_samples)).astype(np.float32))
    waveforms[3, 0, 10] = float("nan")  # one bad training window
    labels = np.repeat([0, 1], 20)
    torch.manual_seed(0)
    model = HybridViT(depth=1, num_classes=2, img_size=PRE.spectrogram_shape[1:])
    optim = OptimConfig(epochs=2, batch_size=10, warmup_epochs=0.0, precision="fp32", patience=None)
    augmenter = Augmenter.from_config(
        AugmentConfig(enabled=False), sampling_rate_hz=PRE.sampling_rate_hz
    )
    fit = train_fold(
        waveforms, labels, np.r_[0:15, 20:35], np.r_[15:20, 35:40], model=model, optim=optim,
        preprocess=PRE, augmenter=augmenter, seed=0, device=torch.device("cpu"),
    )  # fmt: skip
    assert sum(h["skipped_steps"] for h in fit.history) == 2  # once per epoch
    assert all(torch.isfinite(t).all() for t in fit.model.state_dict().values())
    assert all(np.isfinite(h["val_loss"]) for h in fit.history)
