"""HybridViT architecture, freezing, gradients and save/load."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from quake.classes import ClassNames
from quake.models import Backbone, ConvStem, HybridViT, stem_grid_size

IMG = (33, 64)


def small_batch(batch: int = 3, channels: int = 3, img=IMG, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, *img, generator=generator)


def tiny_model(**kwargs) -> HybridViT:
    torch.manual_seed(0)
    defaults = dict(backbone=Backbone.TINY, depth=2, num_classes=3, img_size=IMG, dropout=0.0)
    return HybridViT(**{**defaults, **kwargs})


# ---------------------------------------------------------------- backbones


@pytest.mark.parametrize(
    "text, expected",
    [
        ("tiny", Backbone.TINY),
        ("TINY", Backbone.TINY),
        (" Small ", Backbone.SMALL),
        ("deit-small", Backbone.DEIT_SMALL),
        ("DEIT_TINY", Backbone.DEIT_TINY),
        ("vit_base_patch16_224", Backbone.BASE),
    ],
)
def test_backbone_parses_user_spellings(text, expected):
    assert Backbone.from_name(text) is expected
    assert Backbone(text) is expected


def test_backbone_unknown_name_lists_the_options():
    with pytest.raises(ValueError, match=r"unknown backbone 'huge'.*'tiny', 'small'"):
        Backbone.from_name("huge")
    with pytest.raises(ValueError, match="unknown backbone"):
        HybridViT(backbone="huge")


@pytest.mark.parametrize("backbone", list(Backbone))
def test_backbone_table_agrees_with_timm(backbone):
    vit = timm.create_model(backbone.timm_name, pretrained=False, num_classes=0, depth=1)
    assert backbone.embed_dim == vit.embed_dim
    assert backbone.num_heads == vit.blocks[0].attn.num_heads
    expected_names = {
        Backbone.TINY: "vit_tiny_patch16_224",
        Backbone.SMALL: "vit_small_patch16_224",
        Backbone.BASE: "vit_base_patch16_224",
        Backbone.DEIT_TINY: "deit_tiny_patch16_224",
        Backbone.DEIT_SMALL: "deit_small_patch16_224",
    }
    assert backbone.timm_name == expected_names[backbone]


# ---------------------------------------------------------------- sizes and shapes


def expected_parameter_count(dim: int, depth: int, in_channels=3, num_classes=2, tokens=41):
    """Parameter count written out from the architecture, independently of the code.

    stem:   conv7x7 C->64 (49*C*64) + conv3x3 64->128 (9*64*128) + conv3x3 128->D (9*128*D),
            no conv bias, + three BatchNorms (2 affine params per channel)
    block:  LN (2D) + qkv (3D*D + 3D) + proj (D*D + D) + LN (2D) + fc1 (D*4D + 4D) + fc2 (4D*D + D)
            = 12 D^2 + 13 D
    rest:   CLS token (D) + pos-embed (tokens*D) + final LN (2D) + head (D*K + K)
    """
    stem = 49 * in_channels * 64 + 9 * 64 * 128 + 9 * 128 * dim + 2 * (64 + 128 + dim)
    block = 12 * dim * dim + 13 * dim
    rest = dim + tokens * dim + 2 * dim + dim * num_classes + num_classes
    return stem + depth * block + rest


# Counts for img_size (33, 64) -> 5x8 grid, 41 tokens, 2 classes:
#   TINY  (D=192): depth 4 -> 2,093,378   depth 12 -> 5,652,290   (seed table: 1.5-2.1M / ~5.7M)
#   SMALL (D=384): depth 4 -> 7,642,178   depth 12 -> 21,837,890  (seed table: ~6M / ~22M)
#   BASE  (D=768): depth 4 -> 29,356,610  depth 12 -> 86,059,586  (seed table: ~24M / ~86M)
# DEIT_TINY / DEIT_SMALL are the TINY / SMALL architectures. A block holds 12 D^2 + 13 D
# parameters (1.77M for SMALL, 7.09M for BASE), so four blocks alone are 7.1M / 28.4M: the
# seed table's depth-4 figures for SMALL and BASE are below what four timm blocks contain,
# while its TINY and depth-12 figures agree with the formula to within 2%.
SEED_TABLE = {
    (Backbone.TINY, 4): (1.5e6, 2.1e6),
    (Backbone.TINY, 12): (5.6e6, 5.8e6),
    (Backbone.SMALL, 12): (21.5e6, 22.5e6),
    (Backbone.BASE, 12): (85e6, 87e6),
}


@pytest.mark.parametrize("depth", [4, 12])
@pytest.mark.parametrize("backbone", list(Backbone))
def test_shapes_and_parameter_counts(backbone, depth):
    torch.manual_seed(0)
    model = HybridViT(backbone=backbone, depth=depth, num_classes=2, img_size=IMG).eval()
    x = small_batch(batch=2)
    with torch.inference_mode():
        features = model.forward_features(x)
        logits = model.forward_head(features)
        direct = model(x)
    assert model.grid_size == (5, 8)
    assert features.shape == (2, 1 + 5 * 8, backbone.embed_dim)
    assert logits.shape == (2, 2)
    torch.testing.assert_close(direct, logits)
    assert torch.isfinite(logits).all()
    assert len(model.blocks) == depth

    count = sum(p.numel() for p in model.parameters())
    assert count == expected_parameter_count(backbone.embed_dim, depth)
    if (backbone, depth) in SEED_TABLE:
        low, high = SEED_TABLE[(backbone, depth)]
        assert low <= count <= high


def test_depth_none_takes_all_twelve_blocks():
    model = HybridViT(backbone="tiny", depth=None)
    assert len(model.blocks) == 12
    assert model.init_kwargs["depth"] == 12


@pytest.mark.parametrize("img_size", [(33, 64), (64, 128), (17, 100), (8, 8), 32, (1, 1)])
def test_grid_is_computed_from_img_size(img_size):
    model = tiny_model(depth=1, img_size=img_size)
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    # the stem's real output on an input of that size is the ground truth for the grid
    stem_out = ConvStem(3, 192).eval()(torch.zeros(1, 3, height, width))
    assert model.grid_size == tuple(stem_out.shape[2:]) == stem_grid_size((height, width))
    assert model.pos_embed.shape == (1, 1 + stem_out.shape[2] * stem_out.shape[3], 192)
    with torch.inference_mode():
        out = model.eval()(small_batch(batch=1, img=(height, width)))
    assert out.shape == (1, 3)


def test_stem_layout():
    stem = ConvStem(3, 192)
    convs = [m for m in stem if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 64), (64, 128), (128, 192)]
    assert [(c.kernel_size, c.stride, c.padding) for c in convs] == [
        ((7, 7), (2, 2), (3, 3)),
        ((3, 3), (2, 2), (1, 1)),
        ((3, 3), (2, 2), (1, 1)),
    ]
    assert all(c.bias is None for c in convs)
    assert isinstance(stem[-1], torch.nn.BatchNorm2d)  # no ReLU after the last BN
    assert sum(isinstance(m, torch.nn.ReLU) for m in stem) == 2
    with torch.no_grad():
        out = stem.eval()(small_batch(batch=64))
    assert (out < 0).any()


def test_single_channel_input():
    model = tiny_model(in_channels=1).eval()
    with torch.inference_mode():
        assert model(small_batch(batch=2, channels=1)).shape == (2, 3)


def test_channels_last_gives_the_same_output():
    model = tiny_model().eval()
    x = small_batch()
    with torch.inference_mode():
        fast = model(x)
        model.channels_last = False
        plain = model(x)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


def test_uses_timm_blocks_with_fused_attention():
    model = tiny_model()
    assert all(isinstance(b, timm.models.vision_transformer.Block) for b in model.blocks)
    assert all(b.attn.fused_attn for b in model.blocks)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=0), r"depth must be between 1 and 12, got 0|depth must be a positive"),
        (dict(depth=13), r"depth must be between 1 and 12, got 13"),
        (dict(depth="4"), r"depth must be a positive integer, got '4'"),
        (dict(num_classes=0), r"num_classes must be a positive integer, got 0"),
        (dict(in_channels=2.5), r"in_channels must be a positive integer, got 2.5"),
        (dict(img_size=(33,)), r"img_size must be \(height, width\).*got \(33,\)"),
        (dict(img_size=(0, 64)), r"img_size must be \(height, width\).*got \(0, 64\)"),
        (dict(img_size="33x64"), r"img_size must be .*got '33x64'"),
        (dict(dropout=1.0), r"dropout must be a number in \[0, 1\), got 1.0"),
        (dict(drop_path_rate=-0.1), r"drop_path_rate must be a number in \[0, 1\), got -0.1"),
        (dict(pretrained=3), r"pretrained must be True .* got 3"),
        (dict(freeze_backbone="yes"), r"freeze_backbone must be True or False, got 'yes'"),
        (
            dict(num_classes=3, class_names=["earthquake", "noise"]),
            r"class_names has 2 names .*expected num_classes=3",
        ),
        (dict(num_classes=2, class_names=["earthquake", "volcano"]), r"unknown class name"),
    ],
)
def test_invalid_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HybridViT(**kwargs)


def test_wrong_input_shape_is_named():
    model = tiny_model()
    with pytest.raises(
        ValueError, match=r"input has shape \(2, 3, 32, 64\); expected \(batch, 3, 33, 64\)"
    ):
        model(torch.zeros(2, 3, 32, 64))
    with pytest.raises(ValueError, match=r"input has shape \(3, 33, 64\)"):
        model(torch.zeros(3, 33, 64))


# ---------------------------------------------------------------- training behaviour


def _train_step(model: HybridViT, seed: int = 1) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.05)
    x = small_batch(batch=4, seed=seed)
    y = torch.tensor([0, 1, 2, 1])
    loss = torch.nn.functional.cross_entropy(model.train()(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_every_trainable_parameter_gets_a_finite_gradient():
    model = tiny_model(dropout=0.2, drop_path_rate=0.1).train()
    logits = model(small_batch(batch=4))
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_frozen_backbone_stays_put_while_stem_norm_and_head_train():
    model = tiny_model(freeze_backbone=True)
    assert model.backbone_frozen
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"cls_token", "pos_embed"} | {
        f"blocks.{n}" for n, _ in model.blocks.named_parameters()
    }
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("stem.", "norm.", "head.")) for n in trainable)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train_step(model)
    after = dict(model.named_parameters())
    for name in frozen:
        assert torch.equal(after[name], before[name]), f"{name} moved while frozen"
        assert after[name].grad is None
    for name in trainable:
        assert not torch.equal(after[name], before[name]), f"{name} did not train"


def test_unfreeze_lets_the_backbone_train():
    model = tiny_model(freeze_backbone=True)
    model.unfreeze_backbone()
    assert not model.backbone_frozen
    assert all(p.requires_grad for p in model.parameters())
    before = model.blocks[0].attn.qkv.weight.detach().clone()
    _train_step(model)
    assert not torch.equal(model.blocks[0].attn.qkv.weight, before)
    model.freeze_backbone()
    assert not model.blocks[1].mlp.fc2.weight.requires_grad
    assert model.stem[0].weight.requires_grad


def test_stochastic_depth_rises_over_the_used_blocks():
    model = tiny_model(depth=4, drop_path_rate=0.3)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in model.blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, 4))
    x = small_batch()
    torch.manual_seed(1)
    a = model.train()(x)
    torch.manual_seed(2)
    b = model(x)
    assert not torch.equal(a, b)
    with torch.inference_mode():
        model.eval()
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


# ---------------------------------------------------------------- save / load


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    names = ["earthquake", "explosion", "noise"]
    model = tiny_model(class_names=names, drop_path_rate=0.1)
    _train_step(model)  # move weights and BN statistics away from their init
    model.eval()
    path = model.save(tmp_path / "run" / "model")

    config = json.loads((path / "model.json").read_text())
    assert config["init_kwargs"]["pretrained"] is False
    assert config["class_names"] == names
    assert config["init_kwargs"]["backbone"] == "tiny"
    assert "quake_version" in config
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        assert set(f.keys()) == set(model.state_dict())

    loaded = HybridViT.load(path).eval()
    assert isinstance(loaded.class_names, ClassNames)
    assert loaded.class_names == names
    assert loaded.init_kwargs == model.init_kwargs
    x = small_batch(batch=5, seed=7)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_save_load_keeps_the_frozen_state(tmp_path):
    model = tiny_model(freeze_backbone=True)
    loaded = HybridViT.load(model.save(tmp_path))
    assert loaded.backbone_frozen
    assert not loaded.cls_token.requires_grad


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model.json' not found"):
        HybridViT.load(tmp_path)
    path = tiny_model().save(tmp_path / "m")
    config = json.loads((path / "model.json").read_text())
    config["format"] = "something else"
    (path / "model.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"format 'something else'; expected 'quake.HybridViT'"):
        HybridViT.load(path)


def _edit_config(path, edit) -> None:
    config = json.loads((path / "model.json").read_text())
    edit(config)
    (path / "model.json").write_text(json.dumps(config))


def test_damaged_model_folders_name_the_file_and_what_was_expected(tmp_path):
    saved = tiny_model().save(tmp_path / "m")
    weights = (saved / "model.safetensors").read_bytes()

    _edit_config(saved, lambda c: c["init_kwargs"].update(bogus=1))
    with pytest.raises(ValueError, match=r"model.json' has unknown init_kwargs \['bogus'\]"):
        HybridViT.load(saved)
    _edit_config(saved, lambda c: c["init_kwargs"].pop("bogus"))

    _edit_config(saved, lambda c: c["init_kwargs"].update(depth=3))  # saved with depth 2
    with pytest.raises(ValueError, match=r"model.safetensors' does not fit .*\(missing blocks.2\)"):
        HybridViT.load(saved)
    _edit_config(saved, lambda c: c["init_kwargs"].update(depth=1))
    with pytest.raises(ValueError, match=r"does not fit .*\(unexpected blocks.1\)"):
        HybridViT.load(saved)
    _edit_config(saved, lambda c: c["init_kwargs"].update(depth=2))

    (saved / "model.safetensors").write_bytes(weights[:1000])  # truncated copy
    with pytest.raises(ValueError, match=r"model.safetensors' is not a readable safetensors"):
        HybridViT.load(saved)
    torch.save(tiny_model().state_dict(), saved / "model.safetensors")  # a pickle, renamed
    with pytest.raises(ValueError, match=r"model.safetensors' is not a readable safetensors"):
        HybridViT.load(saved)
    (saved / "model.safetensors").write_bytes(weights)

    (saved / "model.json").write_text('{"format": "quake.HybridViT",')
    with pytest.raises(ValueError, match=r"model.json' is not valid JSON .*expected the model"):
        HybridViT.load(saved)


def test_save_leaves_no_temporary_file(tmp_path):
    tiny_model().save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
