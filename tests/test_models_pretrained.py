"""Loading timm ViT checkpoints into a HybridViT, and pretrained=True without a network."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from quake.models import Backbone, HybridViT

IMG = (33, 64)


@pytest.fixture(scope="module")
def timm_tiny_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()


def write_checkpoint(state_dict, path):
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    else:
        torch.save(state_dict, path)
    return path


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".bin"])
def test_checkpoint_blocks_cls_norm_copied_and_pos_embed_resampled(
    tmp_path, timm_tiny_state_dict, suffix, caplog
):
    ckpt = timm_tiny_state_dict
    path = write_checkpoint(ckpt, tmp_path / f"vit_tiny{suffix}")
    with caplog.at_level(logging.INFO, logger="quake.models"):
        model = HybridViT(backbone=Backbone.TINY, depth=4, img_size=IMG, pretrained=str(path))
    own = model.state_dict()

    for i in range(4):
        for name, value in model.blocks[i].state_dict().items():
            assert torch.equal(value, ckpt[f"blocks.{i}.{name}"]), f"blocks.{i}.{name}"
    assert torch.equal(own["norm.weight"], ckpt["norm.weight"])
    assert torch.equal(own["norm.bias"], ckpt["norm.bias"])
    assert torch.equal(own["cls_token"], ckpt["cls_token"])

    expected_pos = resample_abs_pos_embed(
        ckpt["pos_embed"], new_size=[5, 8], old_size=[14, 14], num_prefix_tokens=1
    )
    assert own["pos_embed"].shape == (1, 41, 192)
    assert torch.equal(own["pos_embed"], expected_pos)
    assert torch.equal(own["pos_embed"][:, 0], ckpt["pos_embed"][:, 0])  # CLS part untouched

    info = model.pretrained_info
    assert info["source"] == f"file:{path}"
    assert info["resampled"] == ["pos_embed"]
    assert info["missing"] == []
    assert {"cls_token", "pos_embed", "norm.weight", "blocks.3.mlp.fc2.bias"} <= set(info["loaded"])
    assert not any(k.startswith(("stem.", "head.")) for k in info["loaded"])
    left_out = set(info["unexpected"])
    assert {"patch_embed.proj.weight", "head.weight", "blocks.4.attn.qkv.weight"} <= left_out
    assert "blocks.3.attn.qkv.weight" not in left_out
    assert len(info["loaded"]) + len(left_out) == len(ckpt)
    messages = caplog.text
    assert "14x14 -> 5x8" in messages and "left out 100" in messages


def test_full_depth_deit_checkpoint_leaves_out_only_patchify_and_head(tmp_path):
    torch.manual_seed(5)
    ckpt = timm.create_model("deit_tiny_patch16_224", pretrained=False).state_dict()
    path = write_checkpoint(ckpt, tmp_path / "deit_tiny.safetensors")
    model = HybridViT(backbone="deit_tiny", depth=None, img_size=(64, 128), pretrained=path)
    assert set(model.pretrained_info["unexpected"]) == {
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "head.weight",
        "head.bias",
    }
    assert torch.equal(model.blocks[11].mlp.fc2.weight, ckpt["blocks.11.mlp.fc2.weight"])
    expected = resample_abs_pos_embed(
        ckpt["pos_embed"], new_size=[8, 16], old_size=[14, 14], num_prefix_tokens=1
    )
    assert torch.equal(model.pos_embed.detach(), expected)


def test_training_checkpoint_wrapped_in_state_dict_key(tmp_path, timm_tiny_state_dict):
    wrapped = {"state_dict": {f"module.{k}": v for k, v in timm_tiny_state_dict.items()}}
    path = tmp_path / "train.pth.tar"
    torch.save(wrapped, path)
    model = HybridViT(depth=2, pretrained=str(path))
    assert torch.equal(model.blocks[1].norm2.weight, timm_tiny_state_dict["blocks.1.norm2.weight"])


def test_checkpoint_of_another_size_is_refused(tmp_path):
    ckpt = timm.create_model("vit_small_patch16_224", pretrained=False, depth=1).state_dict()
    path = write_checkpoint(ckpt, tmp_path / "small.safetensors")
    with pytest.raises(
        ValueError, match=r"'cls_token' has shape \(1, 1, 384\); expected \(1, 1, 192\)"
    ):
        HybridViT(backbone="tiny", depth=1, pretrained=path)


def test_checkpoint_without_vit_tensors_is_refused(tmp_path):
    path = write_checkpoint({"conv.weight": torch.zeros(2, 2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match=r"none of the vit_tiny_patch16_224 backbone tensors"):
        HybridViT(depth=1, pretrained=path)


def test_missing_or_unsupported_checkpoint_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.pth' does not exist"):
        HybridViT(depth=1, pretrained=str(tmp_path / "nope.pth"))
    odd = tmp_path / "weights.h5"
    odd.write_bytes(b"\0")
    with pytest.raises(ValueError, match=r"unsupported checkpoint file .*weights.h5"):
        HybridViT(depth=1, pretrained=str(odd))


def test_npz_goes_to_timms_jax_converter(tmp_path):
    import numpy as np

    path = tmp_path / "not_jax.npz"
    np.savez(path, weights=np.zeros(3))
    # timm's own JAX/Flax reader checks the layout and names what it expected
    with pytest.raises(ValueError, match=r"JAX/Flax parameter layout"):
        HybridViT(depth=1, pretrained=path)


# The hub client retries for about a minute without a network; pretrained=True must not. This
# runs in a fresh interpreter whose Hugging Face and torch caches point at empty folders, so a
# cache on the machine running the tests cannot hide the offline path. 192.0.2.1 (TEST-NET-1)
# is never routed: connecting to it hangs until the probe's own timeout.
OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import torch, timm
    from safetensors.torch import save_file
    from quake.models import HybridViT, PretrainedUnavailableError

    def attempt():
        start = time.perf_counter()
        try:
            HybridViT(backbone="tiny", depth=2, pretrained=True)
        except PretrainedUnavailableError as error:
            return {"error": str(error), "seconds": time.perf_counter() - start}
        return {"error": None, "seconds": time.perf_counter() - start}

    results = {"unreachable": attempt()}
    os.environ["HF_HUB_OFFLINE"] = "1"
    results["offline_flag"] = attempt()

    # Put timm-format weights where the hub client caches them: pretrained=True must use them.
    hub_id = timm.models.get_pretrained_cfg("vit_tiny_patch16_224").hf_hub_id
    repo = os.path.join(os.environ["HF_HOME"], "hub", "models--" + hub_id.replace("/", "--"))
    snapshot = os.path.join(repo, "snapshots", "0" * 40)
    os.makedirs(snapshot)
    os.makedirs(os.path.join(repo, "refs"))
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write("0" * 40)
    torch.manual_seed(3)
    ckpt = timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()
    save_file(ckpt, os.path.join(snapshot, "model.safetensors"))
    model = HybridViT(backbone="tiny", depth=2, pretrained=True)
    results["cached"] = {
        "source": model.pretrained_info["source"],
        "checkpoint": model.pretrained_info["checkpoint"],
        "block_equal": bool(torch.equal(model.blocks[1].attn.proj.weight, ckpt["blocks.1.attn.proj.weight"])),
    }
    print(json.dumps(results))
    """
)


def test_pretrained_true_offline_fails_fast_and_uses_the_cache(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(
        HF_HOME=str(tmp_path / "hf"),
        TORCH_HOME=str(tmp_path / "torch"),
        HF_ENDPOINT="http://192.0.2.1",
    )
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for case in ("unreachable", "offline_flag"):
        error, seconds = results[case]["error"], results[case]["seconds"]
        assert error is not None, case
        assert "'tiny'" in error and "pretrained=False" in error and "pretrained='path/to/" in error
        assert seconds < 10, f"{case}: took {seconds:.1f} s"
    assert "unreachable" in results["unreachable"]["error"]
    assert "HF_HUB_OFFLINE" in results["offline_flag"]["error"]
    assert results["cached"]["source"] == "timm-hub"
    assert results["cached"]["checkpoint"].endswith("model.safetensors")
    assert results["cached"]["block_equal"]
