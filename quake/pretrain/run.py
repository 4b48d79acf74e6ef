"""A pretraining run, end to end, in one output folder (``quake pretrain --out DIR``).

``pretrain(config)`` reads the unlabelled windows (:mod:`quake.pretrain.data`), trains the
HybridViT encoder with masked spectrogram modelling (:mod:`quake.pretrain.objective`) and, after
every epoch, writes ``DIR/``:

- ``encoder.safetensors``: the encoder under HybridViT's state-dict names, which
  ``quake train --pretrained DIR`` loads (:mod:`quake.models.encoder`);
- ``pretrain.json``: preprocessing, model arguments, objective, sources with their skips,
  windows and hours of data (held and seen), epochs, losses, timings, device and versions;
- ``loss.json`` and ``loss.png``: the loss per step and per epoch (training and held-out);
- ``config.yaml``: the resolved config, written first; ``resume.safetensors``: encoder, decoder
  and optimizer state after the last finished epoch.

Every file is replaced whole (``write_atomic``) and one process writes a folder at a time
(``pretrain.lock``). Rerunning with the same ``--out`` goes on after the last finished epoch; a
different config (all but the ``run`` section) or different data is refused, naming what differs.
Shuffling and masks are drawn from the seed and the epoch, so a resumed run computes what an
uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from quake.data import PreprocessConfig, spectrogram_batch
from quake.models import HybridViT
from quake.models.encoder import ENCODER_FILE, PRETRAIN_FILE, encoder_arguments, save_encoder
from quake.pretrain.config import PretrainConfig
from quake.pretrain.contrastive import ContrastiveModel, PartnerIndex
from quake.pretrain.data import UnlabelledWindows, load_windows, split_groups
from quake.pretrain.objective import PATCH, MaskedSpectrogramModel
from quake.runtime import (
    AUTOCAST_DTYPES,
    OutputLock,
    check_outputs_apart,
    config_differences,
    rank_device,
    resolve_device,
    resolve_precision,
    write_atomic,
    write_text_atomic,
)
from quake.training.distributed import SINGLE, DistContext, init_distributed, shutdown
from quake.version import __version__

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
RESUME_FILE = "resume.safetensors"
LOSS_JSON = "loss.json"
LOSS_PNG = "loss.png"
LOCK_FILE = "pretrain.lock"
RUN_FORMAT = "quake.pretrain.run"
RESUME_FORMAT = "quake.pretrain.resume"
#: Validation windows scored per batch (no gradients).
EVAL_BATCH = 256


@dataclass
class PretrainResult:
    out: Path
    summary: dict | None  # the content of pretrain.json; None on ranks other than 0


def default_out() -> Path:
    return Path("runs") / f"pretrain-{time.strftime('%Y%m%d-%H%M%S')}"


def check_out_dir(out: Path, config: PretrainConfig) -> bool:
    """True when ``out`` holds this config's run (to resume), False when it is new or empty.
    A folder of another config (the differing keys named) or not a pretraining folder is a
    ValueError."""
    saved_path = out / CONFIG_FILE
    if saved_path.is_file():
        saved = PretrainConfig.from_dict(yaml.safe_load(saved_path.read_text())).result_dict()
        diffs = config_differences(saved, config.result_dict())
        if diffs:
            raise ValueError(
                f"cannot resume {str(out)!r}: its config differs from this one in "
                + "; ".join(diffs)
                + ". Use another --out folder, or the same settings to resume."
            )
        return True
    if out.exists() and (not out.is_dir() or any(c.name != LOCK_FILE for c in out.iterdir())):
        raise ValueError(
            f"--out {str(out)!r} exists and is not a pretraining folder (no {CONFIG_FILE}); "
            "expected a new folder or one written by an earlier quake pretrain"
        )
    return False


def build_encoder(config: PretrainConfig, img_size: tuple[int, int], init: bool) -> HybridViT:
    """The HybridViT to pretrain; ``init``: load ``model.init`` (a new run, not a resumed one)."""
    return HybridViT(
        backbone=config.model.backbone,
        depth=config.model.depth,
        in_channels=3,
        num_classes=1,  # the head is not pretrained and not saved
        img_size=img_size,
        dropout=0.0,
        pretrained=config.model.pretrained_argument() if init else False,
        drop_path_rate=0.0,
    )


def learning_rate(config: PretrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine to ``lr * min_lr_ratio`` (training's schedule)."""
    from quake.training.loop import warmup_cosine

    o = config.optim
    return o.lr * warmup_cosine(
        step,
        warmup_steps=int(round(o.warmup_epochs * steps_per_epoch)),
        total_steps=o.epochs * steps_per_epoch,
        min_ratio=o.min_lr_ratio,
    )


# --- resume state (safetensors + JSON metadata, no pickle) ---------------------------------------
def save_resume(path: Path, model: torch.nn.Module, optimizer, state: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    optim_state = optimizer.state_dict()
    for pid, entries in optim_state["state"].items():
        for name, value in entries.items():
            tensors[f"optim.{pid}.{name}"] = torch.as_tensor(value).detach().contiguous().cpu()
    metadata = {
        "format": RESUME_FORMAT,
        "state": json.dumps(state),
        "param_groups": json.dumps(optim_state["param_groups"]),
    }
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_resume(path: Path, model: torch.nn.Module, optimizer) -> dict:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        tensors = load_file(str(path), device="cpu")
        state = json.loads(metadata["state"])
        param_groups = json.loads(metadata["param_groups"])
    except Exception as err:  # a damaged file: safetensors, JSON and key errors
        raise ValueError(
            f"{str(path)!r} is not a readable resume state ({type(err).__name__}: {err}); "
            "remove it to start the run again from epoch 0"
        ) from None
    if metadata.get("format") != RESUME_FORMAT:
        raise ValueError(f"{str(path)!r} has format {metadata.get('format')!r}")
    model.load_state_dict(
        {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True
    )
    optim_state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            optim_state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": optim_state, "param_groups": param_groups})
    return state


# --- outputs ------------------------------------------------------------------------------------
def write_loss_plot(path: Path, history: list[dict], step_losses: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if step_losses:
        steps_per_epoch = max(1, len(step_losses) // max(1, len(history)))
        x = np.arange(1, len(step_losses) + 1) / steps_per_epoch
        ax.plot(x, step_losses, color="0.75", lw=0.8, label="training loss per step")
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="training loss (epoch mean)")
    if any(h.get("val_loss") is not None for h in history):
        ax.plot(epochs, [h["val_loss"] for h in history], "s-", label="held-out loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("masked-patch MSE (normalised patches)")
    ax.set_title("quake pretrain: masked spectrogram modelling")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def _versions() -> dict:
    import timm

    return {"quake": __version__, "torch": torch.__version__, "timm": timm.__version__}


# --- the run ------------------------------------------------------------------------------------
def pretrain(config: PretrainConfig, *, progress: bool | None = None) -> PretrainResult:
    """Run (or resume) the pretraining ``config`` describes; returns the output folder."""
    config.validate()
    out = Path(config.run.out) if config.run.out else default_out()
    check_outputs_apart(
        {"--out": out}, {f"--data {i + 1}": p for i, p in enumerate(config.data.paths)}
    )
    check_out_dir(out, config)  # a config mismatch fails before the data are read
    device = resolve_device(config.run.device)
    dist = init_distributed(device)  # torchrun: one process per rank; else SINGLE
    try:
        device = rank_device(device, dist)
        threads = config.run.num_threads or max(1, (os.cpu_count() or 1) // dist.local_world_size)
        torch.set_num_threads(threads)
        if progress is None:
            progress = not config.run.quiet
        progress = progress and dist.is_main
        preprocess = config.data.preprocess_config()

        t0 = time.perf_counter()
        data = load_windows(
            config.data.paths,
            preprocess,
            windows_per_recording=config.data.windows_per_recording,
            time_range=(config.data.start, config.data.end) if config.data.start else None,
            seed=config.seed,
            progress=progress,
        )
        data_s = time.perf_counter() - t0
        lock = OutputLock(out / LOCK_FILE, f"pretraining folder {str(out)!r}")

        def start_on_main() -> None:  # rank 0 alone writes; its errors reach every rank
            out.mkdir(parents=True, exist_ok=True)
            lock.__enter__()
            try:
                if not check_out_dir(out, config):
                    write_text_atomic(out / CONFIG_FILE, config.to_yaml())
            except BaseException:
                lock.__exit__(None, None, None)
                raise

        dist.on_main(start_on_main)
        try:
            return _run(config, out, data, preprocess, device, threads, progress, data_s, dist)
        finally:
            if dist.is_main:
                lock.__exit__(None, None, None)
    finally:
        shutdown(dist)


def _run(
    config: PretrainConfig,
    out: Path,
    data: UnlabelledWindows,
    preprocess: PreprocessConfig,
    device: torch.device,
    threads: int,
    progress: bool,
    data_s: float,
    dist: DistContext = SINGLE,
) -> PretrainResult:
    """The epochs. Under torchrun every rank holds all windows and draws the same order; each
    global batch is split over the ranks and DDP averages the gradients; rank 0 writes."""
    from quake.training.loop import attention_backend, parameter_groups

    resume_path = out / RESUME_FILE
    resuming = resume_path.is_file()
    img_size = tuple(preprocess.spectrogram_shape[1:])
    torch.manual_seed(config.seed)
    encoder = build_encoder(config, img_size, init=not resuming)
    init_info = {
        "requested": config.model.init,
        "source": encoder.pretrained_info.get("source"),
        "tensors_loaded": len(encoder.pretrained_info.get("loaded", [])),
    }
    o = config.objective
    partners = None
    if o.name == "contrastive":
        model = ContrastiveModel(encoder, o.temperature, o.projection_dim).to(device)
        partners = PartnerIndex(data.groups)
    else:
        model = MaskedSpectrogramModel(
            encoder, o.mask_ratio, o.decoder_dim, o.decoder_depth, o.decoder_heads
        ).to(device)
    groups = parameter_groups(model, config.optim.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=config.optim.lr)

    train_idx, val_idx = split_groups(data.groups, config.data.val_fraction, config.seed)
    batch_size = min(config.optim.batch_size, len(train_idx))
    if batch_size < dist.world_size:
        raise ValueError(
            f"a batch of {batch_size} windows cannot be split over {dist.world_size} processes; "
            "expected optim.batch_size (and the training windows) >= the number of processes"
        )
    steps_per_epoch = max(1, len(train_idx) // batch_size)  # the ragged last batch is dropped

    state = {"epochs_done": 0, "history": [], "step_losses": [], "init": init_info}
    if resuming:
        state = load_resume(resume_path, model, optimizer)
        if state.get("n_windows") != len(data):
            raise ValueError(
                f"{str(out)!r} was pretrained on {state.get('n_windows')} windows; the data now "
                f"give {len(data)}: the data changed since the run started, use a new --out folder"
            )
        logger.info("resuming %s after epoch %d", out, state["epochs_done"])
    precision = resolve_precision(config.optim.precision, device)
    autocast = torch.autocast(
        device.type, dtype=AUTOCAST_DTYPES.get(precision), enabled=precision != "fp32"
    )
    max_norm = config.optim.grad_clip_norm or math.inf
    window_h = preprocess.window_s / 3600.0
    info_base = {
        "format": RUN_FORMAT,
        "config": config.result_dict(),
        "model": {**encoder_arguments(encoder), "grid_size": list(encoder.grid_size)},
        "preprocess": preprocess.to_dict(),
        "objective": objective_summary(config, model, partners),
        "data": {
            "sources": data.sources,
            "n_windows": len(data),
            "n_train": int(len(train_idx)),
            "n_val": int(len(val_idx)),
            "window_s": preprocess.window_s,
            "hours": len(data) * window_h,
            "dropped": data.dropped,
        },
        "device": str(device),
        "threads": threads,
        "processes": dist.world_size,
        "backend": ("nccl" if device.type == "cuda" else "gloo") if dist.enabled else None,
        "precision": precision,
        "versions": _versions(),
    }
    logger.info(
        "pretraining %s depth %d on %d windows (%.1f h; %d held out) from %d source(s): "
        "%s, %d steps per epoch, device %s, %s",
        config.model.backbone,
        config.model.depth,
        len(data),
        len(data) * window_h,
        len(val_idx),
        len(data.sources),
        o.name,
        steps_per_epoch,
        device,
        precision,
    )

    def batch_loss(rows: np.ndarray, generator: torch.Generator, training: bool = False):
        """The objective on windows ``rows``; while training through the DDP wrapper (when
        there is one) and autocast, the spectrograms always in float32."""
        spec = spectrogram_batch(data.waveforms[torch.as_tensor(rows)], preprocess).to(device)
        inputs: tuple = (spec,)
        if partners is not None:
            other = torch.as_tensor(partners.draw(rows, generator))
            partner = spectrogram_batch(data.waveforms[other], preprocess).to(device)
            inputs = (spec, partner, torch.as_tensor(partners.codes[rows]))
        with autocast if training else contextlib.nullcontext():
            return (forward if training else model)(*inputs, generator=generator).loss

    def summary(complete: bool) -> dict:
        history = state["history"]
        seconds = sum(h["seconds"] for h in history)
        seen = sum(h["windows"] for h in history)
        return {
            **info_base,
            "complete": complete,
            "init": state["init"],
            "progress": {
                "epochs_done": state["epochs_done"],
                "windows_seen": seen,
                "hours_seen": seen * window_h,
                "first_loss": history[0]["train_loss"] if history else None,
                "final_loss": history[-1]["train_loss"] if history else None,
                "first_val_loss": history[0].get("val_loss") if history else None,
                "final_val_loss": history[-1].get("val_loss") if history else None,
            },
            "timings": {
                "data_s_this_process": data_s,
                "training_s": seconds,
                "windows_per_s": seen / seconds if seconds else None,
            },
            "files": {
                "encoder": ENCODER_FILE,
                "loss": [LOSS_JSON, LOSS_PNG],
                "config": CONFIG_FILE,
                "resume": RESUME_FILE,
            },
        }

    def write_outputs(complete: bool) -> dict:
        save_encoder(encoder, out / ENCODER_FILE)
        info = summary(complete)
        loss = {"history": state["history"], "step_losses": state["step_losses"]}
        write_text_atomic(out / LOSS_JSON, json.dumps(loss) + "\n")
        write_loss_plot(out / LOSS_PNG, state["history"], state["step_losses"])
        write_text_atomic(out / PRETRAIN_FILE, json.dumps(info, indent=2) + "\n")
        return info

    forward = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    bar_cls = None
    if progress:
        from tqdm.auto import tqdm as bar_cls
    with attention_backend(device):
        for epoch in range(state["epochs_done"], config.optim.epochs):
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
            order = train_idx[torch.randperm(len(train_idx), generator=generator).numpy()]
            model.train()
            losses: list[float] = []
            bar = (
                bar_cls(
                    total=steps_per_epoch * batch_size,
                    desc=f"pretrain epoch {epoch + 1}/{config.optim.epochs}",
                    unit="window",
                )
                if bar_cls
                else None
            )
            t_epoch = time.perf_counter()
            for step in range(steps_per_epoch):
                global_step = epoch * steps_per_epoch + step
                lr = learning_rate(config, global_step, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batch = order[step * batch_size : (step + 1) * batch_size]
                loss = batch_loss(batch[dist.rank :: dist.world_size], generator, training=True)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                optimizer.step()
                value = dist.sum([float(loss.detach())])[0] / dist.world_size
                if not math.isfinite(value):
                    raise ValueError(
                        f"the pretraining loss became {value} at epoch {epoch + 1}, step "
                        f"{step + 1}; expected a finite loss: lower optim.lr or use fp32"
                    )
                losses.append(value)
                if bar is not None:
                    bar.update(len(batch))
                    bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.1e}")
            seconds = time.perf_counter() - t_epoch
            if bar is not None:
                bar.close()
            val_loss = _held_out_loss(model, batch_loss, val_idx, config.seed)
            entry = {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)),
                "val_loss": val_loss,
                "lr_end": lr,
                "seconds": seconds,
                "windows": steps_per_epoch * batch_size,
                "windows_per_s": steps_per_epoch * batch_size / seconds,
            }
            state["history"].append(entry)
            state["step_losses"].extend(losses)
            state["epochs_done"] = epoch + 1
            state["n_windows"] = len(data)
            if dist.is_main:
                save_resume(out / RESUME_FILE, model, optimizer, state)
                write_outputs(complete=epoch + 1 == config.optim.epochs)
            dist.barrier()  # the epoch is on disk before any rank goes on
            logger.info(
                "epoch %d/%d: loss %.4f, held-out %s, %.0f windows/s, %.0f s",
                epoch + 1,
                config.optim.epochs,
                entry["train_loss"],
                "-" if val_loss is None else f"{val_loss:.4f}",
                entry["windows_per_s"],
                seconds,
            )
    if not dist.is_main:
        return PretrainResult(out=out, summary=None)
    info = write_outputs(complete=True)
    return PretrainResult(out=out, summary=info)


@torch.no_grad()
def _held_out_loss(model: nn.Module, batch_loss, val_idx: np.ndarray, seed: int) -> float | None:
    """The objective on the held-out windows, with the same masks (and partners) every epoch:
    one generator, seeded alike each time (eval mode)."""
    if len(val_idx) == 0:
        return None
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, len(val_idx), EVAL_BATCH):
        rows = val_idx[start : start + EVAL_BATCH]
        total += float(batch_loss(rows, generator)) * len(rows)
    model.train()
    return total / len(val_idx)


def objective_summary(config: PretrainConfig, model: nn.Module, partners) -> dict:
    """What ``pretrain.json`` says of the objective."""
    o = config.objective
    if partners is not None:
        paired = int((partners.size > 1).sum())
        return {
            "name": o.name,
            "positives": "another station's window of the same event (the window itself when "
            "its event has one), each view with its own frequency and time mask",
            "events": len(partners.size),
            "events_with_several_windows": paired,
            "loss": "symmetric InfoNCE over the batch, same-event negatives removed",
            "temperature": o.temperature,
            "projection_dim": o.projection_dim,
        }
    return {
        "name": o.name,
        "mask_ratio": o.mask_ratio,
        "tokens": model.num_patches,
        "visible_tokens": model.keep,
        "patch": [PATCH, PATCH],
        "target": "log-spectrogram patch of each masked token cell, normalised per patch",
        "loss": "mean squared error over the masked cells",
        "decoder": {"dim": o.decoder_dim, "depth": o.decoder_depth, "heads": o.decoder_heads},
    }
