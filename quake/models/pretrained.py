"""Pretrained ViT weights for a HybridViT: find them, read them, and copy what fits.

The HybridViT keeps timm's CLS token, transformer blocks and final norm, so those come
straight from a timm ImageNet checkpoint. The position embedding is split into its CLS part
and its 14x14 patch grid, and the grid is resampled bicubically (timm's
``resample_abs_pos_embed``) to the stem's grid. The patch projection and the ImageNet head
have no counterpart here and are left out; every such decision is logged and returned.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from quake.models.backbones import Backbone

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".tar", ".safetensors", ".npz")
HUB_PROBE_TIMEOUT_S = 3.0
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class PretrainedUnavailableError(RuntimeError):
    """``pretrained=True`` was asked for, but the weights are neither cached nor downloadable."""


def read_checkpoint(path: str | os.PathLike[str], backbone: Backbone) -> dict[str, torch.Tensor]:
    """Read a timm ViT checkpoint file into a flat state dict (no pickle beyond tensors).

    ``.pth``/``.pt``/``.bin``/``.tar`` and ``.safetensors`` go through timm's ``load_state_dict``
    (``weights_only`` loading, EMA weights preferred, ``module.`` prefixes stripped); a Google
    JAX ``.npz`` is read by timm's own converter into a full timm model of ``backbone``.
    """
    import timm
    from timm.models import load_state_dict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained checkpoint {str(path)!r} does not exist; expected a timm ViT checkpoint "
            f"file ({', '.join(CHECKPOINT_SUFFIXES)})"
        )
    suffix = path.suffix.lower()
    if suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(
            f"unsupported checkpoint file {str(path)!r}; expected one of {CHECKPOINT_SUFFIXES}"
        )
    if suffix == ".npz":
        reference = timm.create_model(backbone.timm_name, pretrained=False, num_classes=0)
        reference.load_pretrained(str(path))
        return reference.state_dict()
    try:
        state_dict = load_state_dict(str(path), use_ema=True, device="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise their own types for unreadable files
        raise ValueError(
            f"cannot read checkpoint {str(path)!r} ({str(err).splitlines()[0]}); expected a "
            "state dict of tensors (a pickle holding other objects is never unpickled)"
        ) from None
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise ValueError(
            f"checkpoint {str(path)!r} is not a state dict of tensors; expected a timm ViT "
            "state dict (e.g. timm.create_model(name).state_dict())"
        )
    return dict(state_dict)


def _is_offline() -> bool:
    import huggingface_hub.constants as hf_constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return flag or bool(getattr(hf_constants, "HF_HUB_OFFLINE", False))


def _hub_reachable(endpoint: str, timeout_s: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One TCP connect to the hub, bounded in time even when DNS hangs (it ignores timeouts)."""
    parsed = urlparse(endpoint)
    host = parsed.hostname
    if not host:
        return False
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="quake-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


def _cached_hub_file(backbone: Backbone) -> Path | None:
    """A locally cached copy of the backbone's default timm weights, or None."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg
    from timm.models._hub import get_cache_dir

    cfg = get_pretrained_cfg(backbone.timm_name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        repo_id, _, revision = cfg.hf_hub_id.partition("@")
        names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HF_WEIGHT_FILES
        for name in names:
            cached = try_to_load_from_cache(repo_id, name, revision=revision or None)
            if isinstance(cached, str) and os.path.isfile(cached):
                return Path(cached)
    if cfg.url:
        legacy = Path(get_cache_dir()) / os.path.basename(urlparse(cfg.url).path)
        if legacy.is_file():
            return legacy
    return None


def fetch_hub_state_dict(backbone: Backbone) -> tuple[dict[str, torch.Tensor], str]:
    """timm's default ImageNet weights for ``backbone`` and where they came from.

    The local cache is tried first, then the Hugging Face hub.
    Offline (``HF_HUB_OFFLINE`` set, or the hub unreachable within a few seconds) with nothing
    cached raises :class:`PretrainedUnavailableError` at once, instead of the hub client's
    minute of retries.
    """
    from timm.models import get_pretrained_cfg, load_state_dict_from_hf

    cached = _cached_hub_file(backbone)
    if cached is not None:
        logger.info("Pretrained %s weights found in the local cache: %s", backbone.value, cached)
        return read_checkpoint(cached, backbone), str(cached)

    cfg = get_pretrained_cfg(backbone.timm_name)
    hub_id = cfg.hf_hub_id if cfg is not None else None
    how_to = (
        f"pass a local timm checkpoint with pretrained='path/to/{backbone.timm_name}.safetensors' "
        "(.pth/.bin/.safetensors/.npz), or pretrained=False for random initialisation"
    )
    if not hub_id:
        raise PretrainedUnavailableError(
            f"timm has no hub weights registered for backbone {backbone.value!r} "
            f"({backbone.timm_name}); {how_to}"
        )
    import huggingface_hub.constants as hf_constants

    if _is_offline():
        reason = "HF_HUB_OFFLINE is set"
    elif not _hub_reachable(hf_constants.ENDPOINT):
        reason = f"{hf_constants.ENDPOINT} is unreachable"
    else:
        logger.info("Downloading pretrained %s weights from %s", backbone.value, hub_id)
        return load_state_dict_from_hf(hub_id.partition("@")[0]), hub_id
    raise PretrainedUnavailableError(
        f"pretrained weights for backbone {backbone.value!r} ({hub_id}) are not in the local "
        f"cache ({hf_constants.HF_HUB_CACHE}) and cannot be downloaded: {reason}. "
        f"To go on offline, {how_to}."
    )


def _pretrained_grid(num_patch_tokens: int, backbone: Backbone) -> tuple[int, int]:
    expected = backbone.spec.pretrain_grid_size
    if num_patch_tokens == expected[0] * expected[1]:
        return expected
    side = math.isqrt(num_patch_tokens)
    if side * side != num_patch_tokens:
        raise ValueError(
            f"checkpoint pos_embed has {num_patch_tokens} patch tokens, not a square grid; "
            f"expected {expected[0]}x{expected[1]} for {backbone.timm_name}"
        )
    return side, side


def copy_backbone_weights(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    backbone: Backbone,
    grid_size: tuple[int, int],
    backbone_keys: list[str],
) -> dict[str, list[str]]:
    """Copy CLS token, blocks, final norm and the resampled pos-embed into ``model``.

    ``backbone_keys`` are the model's state-dict keys that a ViT checkpoint may fill. Returns
    ``{"loaded", "resampled", "missing", "unexpected"}`` key lists; ``unexpected`` are the
    checkpoint keys left out (patch projection, ImageNet head, blocks beyond ``depth``).
    """
    from timm.layers import resample_abs_pos_embed

    own = model.state_dict()
    loaded: list[str] = []
    resampled: list[str] = []
    missing: list[str] = []
    with torch.no_grad():
        for key in backbone_keys:
            if key not in state_dict:
                missing.append(key)
                continue
            value = state_dict[key]
            if key == "pos_embed" and value.ndim == 3:
                old_grid = _pretrained_grid(value.shape[1] - 1, backbone)
                if old_grid != tuple(grid_size):
                    value = resample_abs_pos_embed(
                        value,
                        new_size=list(grid_size),
                        old_size=list(old_grid),
                        num_prefix_tokens=1,
                    )
                    resampled.append(key)
                    logger.info(
                        "Resampled pos_embed patch grid %dx%d -> %dx%d (bicubic), CLS part copied",
                        *old_grid,
                        *grid_size,
                    )
            if value.shape != own[key].shape:
                raise ValueError(
                    f"checkpoint tensor {key!r} has shape {tuple(value.shape)}; expected "
                    f"{tuple(own[key].shape)} for backbone {backbone.value!r} "
                    f"({backbone.timm_name}) - is the checkpoint from another ViT size?"
                )
            own[key].copy_(value)
            loaded.append(key)
    if not loaded:
        raise ValueError(
            f"checkpoint has none of the {backbone.timm_name} backbone tensors (e.g. "
            f"'blocks.0.attn.qkv.weight', 'cls_token'); got keys {sorted(state_dict)[:8]}..."
        )
    wanted = set(backbone_keys)
    unexpected = [k for k in state_dict if k not in wanted]
    logger.info(
        "Pretrained %s: loaded %d tensors, resampled %s, left out %d checkpoint tensors (%s)",
        backbone.timm_name,
        len(loaded),
        resampled or "none",
        len(unexpected),
        summarise_keys(unexpected),
    )
    if missing:
        logger.warning(
            "Pretrained %s: %d backbone tensors missing from the checkpoint keep their random "
            "init: %s",
            backbone.timm_name,
            len(missing),
            missing,
        )
    return {"loaded": loaded, "resampled": resampled, "missing": missing, "unexpected": unexpected}


def summarise_keys(keys: list[str]) -> str:
    """Group 'blocks.7.mlp.fc1.weight' style keys by their module for a one-line log."""
    groups: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        group = ".".join(parts[:2]) if parts[0] == "blocks" else parts[0]
        groups[group] = groups.get(group, 0) + 1
    return ", ".join(groups) if groups else "none"
