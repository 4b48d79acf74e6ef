"""The fusion head: physical features of the spectrogram beside the CLS token."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from quake.data import PreprocessConfig, WaveformDataAdapter, open_dataset, spectrogram_batch
from quake.models import HybridViT
from quake.models.encoder import ENCODER_FILE, save_encoder
from quake.models.fusion import FUSION_DIM, spectrogram_summary, summary_size

IMG = (33, 32)


def _model(**kwargs) -> HybridViT:
    torch.manual_seed(0)
    return HybridViT(depth=1, num_classes=3, img_size=IMG, fusion=True, **kwargs).eval()


@pytest.fixture(scope="module")
def real_spectrograms(real_data_dir) -> torch.Tensor:
    """(4, 3, 33, 32) spectrograms of eqnoise-3c recordings, as training makes them."""
    config = PreprocessConfig()
    adapter = WaveformDataAdapter(open_dataset(real_data_dir / "eqnoise-3c"), config=config)
    windows = np.stack(list(adapter.get_waveforms([0, 1, 2, 3])))
    return spectrogram_batch(torch.as_tensor(windows), config)


def test_summary_is_the_mean_spectrum_envelope_and_hv_of_real_recordings(real_spectrograms):
    x = real_spectrograms
    assert tuple(x.shape[1:]) == (3, *IMG)
    summary = spectrogram_summary(x)
    assert summary.shape == (4, summary_size(3, IMG)) == (4, 3 * (33 + 32) + 33)
    s = x.numpy().astype(np.float64)
    spectrum, envelope = s.mean(axis=3), s.mean(axis=2)  # computed here, independently
    hv = (spectrum[:, 1] + spectrum[:, 2]) / 2 - spectrum[:, 0]
    expected = np.concatenate([spectrum.reshape(4, -1), envelope.reshape(4, -1), hv], axis=1)
    np.testing.assert_allclose(summary.numpy(), expected, rtol=1e-5, atol=1e-6)
    # a vertical-only recording has no H/V part
    assert spectrogram_summary(x[:, :1]).shape == (4, summary_size(1, IMG)) == (4, 33 + 32)


def test_fusion_head_shapes_and_what_it_reads(real_spectrograms):
    model = _model()
    assert model.head.in_features == model.embed_dim + FUSION_DIM
    assert model.fusion.norm.normalized_shape == (summary_size(3, IMG),)
    logits = model(real_spectrograms)
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()
    tokens = model.forward_features(real_spectrograms)
    features = model.forward_head(tokens, pre_logits=True, spectrogram=real_spectrograms)
    assert features.shape == (4, model.embed_dim + FUSION_DIM)
    with pytest.raises(ValueError, match="fusion needs the input spectrogram"):
        model.forward_head(tokens)
    # the head really uses the physical features: zeroing the fusion projection changes logits
    with torch.no_grad():
        model.fusion.proj.weight.zero_()
        model.fusion.proj.bias.zero_()
    assert not torch.allclose(model(real_spectrograms), logits)
    # and the gradient reaches the fusion projection
    model = _model().train()
    model(real_spectrograms).sum().backward()
    assert model.fusion.proj.weight.grad.abs().sum() > 0
    plain = HybridViT(depth=1, num_classes=3, img_size=IMG)
    assert plain.fusion is None and plain.head.in_features == plain.embed_dim


def test_fusion_model_saves_and_loads(tmp_path, real_spectrograms):
    model = _model()
    model.save(tmp_path / "vit")
    config = json.loads((tmp_path / "vit" / "model.json").read_text())
    assert config["init_kwargs"]["fusion"] is True
    loaded = HybridViT.load(tmp_path / "vit").eval()
    assert loaded.fusion is not None
    torch.testing.assert_close(loaded(real_spectrograms), model(real_spectrograms))
    # model.json edited to a plain head: the weights no longer fit, and both files are named
    config["init_kwargs"]["fusion"] = False
    (tmp_path / "vit" / "model.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unexpected fusion\.|model\.json"):
        HybridViT.load(tmp_path / "vit")
    with pytest.raises(ValueError, match="fusion must be True or False, got 'yes'"):
        HybridViT(depth=1, img_size=IMG, fusion="yes")


def test_a_pretrained_encoder_fills_all_but_the_head_and_fusion(tmp_path):
    encoder = HybridViT(depth=1, img_size=IMG)
    save_encoder(encoder, tmp_path / ENCODER_FILE)
    model = _model(pretrained=str(tmp_path / ENCODER_FILE))
    info = model.pretrained_info
    assert sorted(info["not_pretrained"]) == sorted(
        ["head.weight", "head.bias"]
        + [f"fusion.{k}" for k in ("norm.weight", "norm.bias", "proj.weight", "proj.bias")]
    )
    assert set(info["loaded"]) | set(info["not_pretrained"]) == set(model.state_dict())
    assert torch.equal(model.blocks[0].attn.qkv.weight, encoder.blocks[0].attn.qkv.weight)
