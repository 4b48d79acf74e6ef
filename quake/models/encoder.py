"""Encoder weights of a pretraining run (``quake pretrain``): written, found, checked, loaded.

A pretraining folder holds ``encoder.safetensors`` and ``pretrain.json``. The weights carry the
HybridViT's own state-dict names (``stem.*``, ``cls_token``, ``pos_embed``, ``blocks.*``,
``norm.*``): everything but the classification head, which pretraining has no use for. The
model arguments that decide the shapes (backbone, depth, input channels, input size) are in the
file's safetensors metadata, so the weights file alone is enough to load; ``pretrain.json``
beside it adds what the run saw (sources, windows, hours, epochs, preprocessing).

Loading (:func:`load_encoder`) refuses another backbone, depth or number of input channels,
naming both sides; a different input size only changes the token grid, and then the position
embedding is resampled (timm's ``resample_abs_pos_embed``, as for ImageNet weights). Every
tensor is accounted for: all encoder tensors are loaded, the head keeps its random
initialisation, and a file with tensors missing or left over is refused.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quake.models.stem import stem_grid_size
from quake.runtime import write_atomic

logger = logging.getLogger(__name__)

ENCODER_FILE = "encoder.safetensors"
PRETRAIN_FILE = "pretrain.json"
ENCODER_FORMAT = "quake.pretrain.encoder"
#: Tensors a pretraining run does not train (the classification head, the fusion features).
HEAD_PREFIXES = ("head.", "fusion.")


def freeze_head(model: nn.Module) -> None:
    """Freeze the tensors a pretraining objective does not use (head, fusion): DDP must see
    every trainable parameter take part in the loss."""
    for name, parameter in model.named_parameters():
        if name.startswith(HEAD_PREFIXES):
            parameter.requires_grad_(False)


def encoder_arguments(model: Any) -> dict[str, Any]:
    """The HybridViT arguments the encoder tensors' shapes depend on."""
    return {
        "backbone": model.backbone.value,
        "depth": int(model.depth),
        "in_channels": int(model.in_channels),
        "img_size": [int(s) for s in model.img_size],
    }


def encoder_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict without the head, detached, contiguous, on the CPU."""
    return {
        k: v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
        if not k.startswith(HEAD_PREFIXES)
    }


def save_encoder(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write the encoder of ``model`` (a HybridViT) to ``path`` atomically (safetensors)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = encoder_state_dict(model)
    metadata = {"format": ENCODER_FORMAT, "model": json.dumps(encoder_arguments(model))}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return path


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise ValueError(
            f"{str(path)!r} is not a readable safetensors file ({err}); expected the "
            f"{ENCODER_FILE} of a pretraining run"
        ) from None


def what_folder_is(path: Path) -> str:
    """What a folder without encoder weights looks like, so that the refusal can say which
    of quake's other folders was passed where a pretraining folder was expected."""
    if (path / "config.yaml").is_file() and (path / "model").is_dir():
        return "a quake training run folder (config.yaml + model/)"
    if (path / "classifier.json").is_file():
        return "a saved quake classifier (classifier.json)"
    return f"a folder without {ENCODER_FILE}"


def find_encoder(path: str | os.PathLike[str]) -> Path | None:
    """The encoder weights ``path`` names (a pretraining folder, or its ``encoder.safetensors``
    under any name), or None when ``path`` is some other file (a timm checkpoint). A folder
    without the weights is a ValueError naming what was expected."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / ENCODER_FILE).is_file():
            return path / ENCODER_FILE
        raise ValueError(
            f"{str(path)!r} is {what_folder_is(path)}; expected a folder written by "
            f"quake pretrain (with {ENCODER_FILE}) or a timm checkpoint file"
        )
    if path.is_file() and path.suffix.lower() == ".safetensors":
        if _metadata(path).get("format") == ENCODER_FORMAT:
            return path
    return None


@dataclass
class EncoderCheckpoint:
    """An encoder weights file read back: its tensors, model arguments and run summary."""

    path: Path
    arguments: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.path.parent


def read_encoder(path: str | os.PathLike[str]) -> EncoderCheckpoint:
    """Read an encoder weights file (and the ``pretrain.json`` beside it, when there is one)."""
    from safetensors.torch import load_file

    path = Path(path)
    metadata = _metadata(path)
    if metadata.get("format") != ENCODER_FORMAT:
        raise ValueError(
            f"{str(path)!r} has format {metadata.get('format')!r}; expected {ENCODER_FORMAT!r}"
        )
    try:
        arguments = json.loads(metadata.get("model", ""))
        missing = [
            k for k in ("backbone", "depth", "in_channels", "img_size") if k not in arguments
        ]
    except (json.JSONDecodeError, TypeError):
        arguments, missing = {}, ["model"]
    if missing:
        raise ValueError(
            f"{str(path)!r} lacks the model arguments {missing} in its metadata; expected the "
            f"{ENCODER_FILE} quake pretrain writes"
        )
    run: dict[str, Any] = {}
    run_file = path.parent / PRETRAIN_FILE
    if run_file.is_file():
        try:
            run = json.loads(run_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            logger.warning("%s is unreadable (%s); loading the weights without it", run_file, err)
    return EncoderCheckpoint(path, arguments, load_file(str(path), device="cpu"), run)


def run_summary(checkpoint: EncoderCheckpoint) -> dict[str, Any]:
    """What a training report says about the pretraining run the weights come from."""
    run = checkpoint.run
    progress = run.get("progress", {})
    return {
        "folder": str(checkpoint.folder),
        "weights": str(checkpoint.path),
        "model": checkpoint.arguments,
        "complete": run.get("complete"),
        "epochs_done": progress.get("epochs_done"),
        "epochs": run.get("config", {}).get("optim", {}).get("epochs"),
        "windows": run.get("data", {}).get("n_windows"),
        "windows_seen": progress.get("windows_seen"),
        "hours_seen": progress.get("hours_seen"),
        "final_loss": progress.get("final_loss"),
        "sources": [s.get("path") for s in run.get("data", {}).get("sources", [])],
        "objective": run.get("objective", {}).get("name"),
        "preprocess": run.get("preprocess"),
    }


def load_encoder(model: nn.Module, checkpoint: EncoderCheckpoint) -> dict[str, list[str]]:
    """Copy ``checkpoint`` into ``model`` (a HybridViT) after checking that it fits.

    Returns ``{"loaded", "resampled", "missing", "unexpected", "not_pretrained"}`` key lists;
    ``not_pretrained`` are the head's tensors, which keep their initialisation.
    """
    from timm.layers import resample_abs_pos_embed

    theirs = checkpoint.arguments
    ours = encoder_arguments(model)
    differing = [k for k in ("backbone", "depth", "in_channels") if theirs.get(k) != ours[k]]
    if differing:

        def describe(args: dict) -> str:
            return ", ".join(f"{k} {args.get(k)!r}" for k in ("backbone", "depth", "in_channels"))

        raise ValueError(
            f"the pretrained encoder {str(checkpoint.path)!r} has {describe(theirs)}; this model "
            f"has {describe(ours)}: {', '.join(differing)} must match (train with the pretraining "
            "run's model.backbone and model.depth, or pretrain again with this model's)"
        )
    own = model.state_dict()
    expected = [k for k in own if not k.startswith(HEAD_PREFIXES)]
    state = checkpoint.state_dict
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in own or k.startswith(HEAD_PREFIXES)]
    if missing or unexpected:
        raise ValueError(
            f"{str(checkpoint.path)!r} does not fit a HybridViT with {ours}: missing tensors "
            f"{missing[:6]}, unexpected tensors {unexpected[:6]}; expected exactly the encoder "
            "tensors quake pretrain writes"
        )
    old_grid = stem_grid_size(theirs["img_size"])
    resampled: list[str] = []
    with torch.no_grad():
        for key in expected:
            value = state[key]
            if key == "pos_embed" and tuple(old_grid) != tuple(model.grid_size):
                value = resample_abs_pos_embed(
                    value,
                    new_size=list(model.grid_size),
                    old_size=list(old_grid),
                    num_prefix_tokens=1,
                )
                resampled.append(key)
                logger.info(
                    "Resampled the pretrained pos_embed grid %dx%d (input %s) -> %dx%d (input %s)",
                    *old_grid,
                    "x".join(map(str, theirs["img_size"])),
                    *model.grid_size,
                    "x".join(map(str, ours["img_size"])),
                )
            if value.shape != own[key].shape:
                raise ValueError(
                    f"{str(checkpoint.path)!r}: tensor {key!r} has shape {tuple(value.shape)}; "
                    f"expected {tuple(own[key].shape)} for {ours}"
                )
            own[key].copy_(value)
    not_pretrained = [k for k in own if k.startswith(HEAD_PREFIXES)]
    logger.info(
        "Pretrained encoder %s: loaded %d tensors (stem, CLS, pos_embed, %d blocks, norm); "
        "resampled %s; the head (%s) keeps its initialisation",
        checkpoint.path,
        len(expected),
        model.depth,
        resampled or "none",
        ", ".join(not_pretrained),
    )
    return {
        "loaded": expected,
        "resampled": resampled,
        "missing": [],
        "unexpected": [],
        "not_pretrained": not_pretrained,
    }
