"""A pretraining run, end to end, in one output folder (``quake pretrain --out DIR``).

``pretrain(config)`` reads the unlabelled windows (:mod:`quake.pretrain.data`), trains the
HybridViT encoder with masked spectrogram modelling (:mod:`quake.pretrain.objective`) and, after
every epoch, writes ``DIR/``:

- ``encoder.safetensors``: the encoder under HybridViT's state-dict names, which
  ``quake train --pretrained DIR`` loads (:mod:`quake.models.encoder`);
- ``pretrain.json``: preprocessing, model arguments, objective, sources with their skips,
  windows and hours of data (held and seen), epochs, losses, timings, device and versions;
- ``skipped.csv``: every recording or file the data check dropped, by name, with its
  ``--data`` path, reason and detail (``pretrain.json`` has the counts per reason);
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
import csv
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from quake.data import PreprocessConfig, spectrogram_batch
from quake.models import HybridViT
from quake.models.encoder import ENCODER_FILE, PRETRAIN_FILE, encoder_arguments, save_encoder
from quake.pretrain.config import PretrainConfig
from quake.pretrain.contrastive import ContrastiveModel, PartnerIndex
from quake.pretrain.data import UnlabelledWindows, load_windows, split_groups
from quake.pretrain.objective import PATCH, MaskedSpectrogramModel
from quake.run_folder import CONFIG_FILE, check_run_folder, default_run_dir, versions
from quake.runtime import (
    AUTOCAST_DTYPES,
    SINGLE,
    OutputLock,
    Ranks,
    check_outputs_apart,
    joined_ranks,
    resolve_precision,
    write_atomic,
    write_text_atomic,
)
from quake.training.loop import attention_backend, parameter_groups, warmup_cosine

logger = logging.getLogger(__name__)

RESUME_FILE = "resume.safetensors"
LOSS_JSON = "loss.json"
LOSS_PNG = "loss.png"
SKIPPED_FILE = "skipped.csv"
SKIPPED_COLUMNS = ("source", "item", "reason", "detail")
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
    return default_run_dir("pretrain")


def check_out_dir(out: Path, config: PretrainConfig) -> bool:
    """True when ``out`` holds this config's run (to resume), False when it is new or empty."""
    return check_run_folder(out, config, "pretraining folder", ignore=[LOCK_FILE])


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


def write_skipped(path: Path, data: UnlabelledWindows) -> None:
    """``skipped.csv``: each item the data check dropped, named, so that a corrupt file is
    found by its path rather than only counted (a header alone when nothing was dropped)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SKIPPED_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(data.skipped)
    write_text_atomic(path, text.getvalue())


# --- the run ------------------------------------------------------------------------------------
def pretrain(config: PretrainConfig, *, progress: bool | None = None) -> PretrainResult:
    """Run (or resume) the pretraining ``config`` describes; returns the output folder."""
    config.validate()
    out = Path(config.run.out) if config.run.out else default_out()
    check_outputs_apart(
        {"--out": out}, {f"--data {i + 1}": p for i, p in enumerate(config.data.paths)}
    )
    check_out_dir(out, config)  # a config mismatch fails before the data are read
    with joined_ranks(config.run.device) as dist:  # torchrun: one process per rank
        device = dist.device(config.run.device)
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
                write_skipped(out / SKIPPED_FILE, data)
            except BaseException:
                lock.__exit__(None, None, None)
                raise

        dist.on_main(start_on_main)
        try:
            return _run(config, out, data, preprocess, device, threads, progress, data_s, dist)
        finally:
            if dist.is_main:
                lock.__exit__(None, None, None)


def _run(
    config: PretrainConfig,
    out: Path,
    data: UnlabelledWindows,
    preprocess: PreprocessConfig,
    device: torch.device,
    threads: int,
    progress: bool,
    data_s: float,
    dist: Ranks = SINGLE,
) -> PretrainResult:
    """The epochs. Under torchrun every rank holds all windows and draws the same order; each
    global batch is split over the ranks and DDP averages the gradients; rank 0 writes."""
    resuming = (out / RESUME_FILE).is_file()
    img_size = tuple(preprocess.spectrogram_shape[1:])
    torch.manual_seed(config.seed)
    encoder = build_encoder(config, img_size, init=not resuming)
    init_info = _init_info(config, encoder)
    model, partners = _objective_model(config, encoder, data, device)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.optim.weight_decay), lr=config.optim.lr
    )
    train_idx, val_idx = split_groups(data.groups, config.data.val_fraction, config.seed)
    batch_size, steps_per_epoch = _batch_plan(config, len(train_idx), dist)
    state = {"epochs_done": 0, "history": [], "step_losses": [], "init": init_info}
    if resuming:
        state = _restore(out, model, optimizer, len(data))
    precision = resolve_precision(config.optim.precision, device)
    outputs = _Outputs(
        out=out,
        encoder=encoder,
        info_base={
            **_model_info(config, encoder, model, partners, preprocess),
            "data": _data_info(data, preprocess, len(train_idx), len(val_idx)),
            **_runtime_info(device, threads, precision, dist),
        },
        state=state,
        window_h=preprocess.window_s / 3600.0,
        data_s=data_s,
    )
    _log_start(config, data, preprocess, len(val_idx), steps_per_epoch, device, precision)
    batch_loss = _BatchLoss(
        data=data,
        preprocess=preprocess,
        device=device,
        partners=partners,
        model=model,
        autocast=torch.autocast(
            device.type, dtype=AUTOCAST_DTYPES.get(precision), enabled=precision != "fp32"
        ),
        forward=_distributed(model, device, dist),
    )
    epochs = _Epochs(
        config=config,
        model=model,
        optimizer=optimizer,
        batch_loss=batch_loss,
        train_idx=train_idx,
        val_idx=val_idx,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        dist=dist,
        bar_cls=_progress_bar_class(progress),
    )
    with attention_backend(device):
        for epoch in range(state["epochs_done"], config.optim.epochs):
            entry, losses = epochs.run(epoch)
            _record_epoch(state, entry, losses, len(data))
            if dist.is_main:
                save_resume(out / RESUME_FILE, model, optimizer, state)
                outputs.write(complete=epoch + 1 == config.optim.epochs)
            dist.barrier()  # the epoch is on disk before any rank goes on
            _log_epoch(config, entry)
    if not dist.is_main:
        return PretrainResult(out=out, summary=None)
    info = outputs.write(complete=True)
    return PretrainResult(out=out, summary=info)


# --- the steps of a run -------------------------------------------------------------------------
def _init_info(config: PretrainConfig, encoder: HybridViT) -> dict:
    """What ``pretrain.json`` says of the encoder's starting weights (``model.init``)."""
    return {
        "requested": config.model.init,
        "source": encoder.pretrained_info.get("source"),
        "tensors_loaded": len(encoder.pretrained_info.get("loaded", [])),
    }


def _objective_model(
    config: PretrainConfig, encoder: HybridViT, data: UnlabelledWindows, device: torch.device
) -> tuple[nn.Module, PartnerIndex | None]:
    """The encoder inside the configured objective, and the partner index a contrastive one uses."""
    o = config.objective
    if o.name == "contrastive":
        model = ContrastiveModel(encoder, o.temperature, o.projection_dim).to(device)
        return model, PartnerIndex(data.groups)
    model = MaskedSpectrogramModel(
        encoder, o.mask_ratio, o.decoder_dim, o.decoder_depth, o.decoder_heads
    ).to(device)
    return model, None


def _batch_plan(config: PretrainConfig, n_train: int, dist: Ranks) -> tuple[int, int]:
    """The global batch size and the steps per epoch (the ragged last batch is dropped)."""
    batch_size = min(config.optim.batch_size, n_train)
    if batch_size < dist.world_size:
        raise ValueError(
            f"a batch of {batch_size} windows cannot be split over {dist.world_size} processes; "
            "expected optim.batch_size (and the training windows) >= the number of processes"
        )
    return batch_size, max(1, n_train // batch_size)


def _restore(out: Path, model: nn.Module, optimizer, n_windows: int) -> dict:
    """The state saved after the last finished epoch, loaded into ``model`` and ``optimizer``;
    refused when the data now give another number of windows."""
    state = load_resume(out / RESUME_FILE, model, optimizer)
    if state.get("n_windows") != n_windows:
        raise ValueError(
            f"{str(out)!r} was pretrained on {state.get('n_windows')} windows; the data now "
            f"give {n_windows}: the data changed since the run started, use a new --out folder"
        )
    logger.info("resuming %s after epoch %d", out, state["epochs_done"])
    return state


def _model_info(
    config: PretrainConfig,
    encoder: HybridViT,
    model: nn.Module,
    partners: PartnerIndex | None,
    preprocess: PreprocessConfig,
) -> dict:
    """``pretrain.json``'s format, config, model arguments, preprocessing and objective."""
    return {
        "format": RUN_FORMAT,
        "config": config.result_dict(),
        "model": {**encoder_arguments(encoder), "grid_size": list(encoder.grid_size)},
        "preprocess": preprocess.to_dict(),
        "objective": objective_summary(config, model, partners),
    }


def _data_info(
    data: UnlabelledWindows, preprocess: PreprocessConfig, n_train: int, n_val: int
) -> dict:
    """``pretrain.json``'s sources, windows, hours of data and what was dropped."""
    return {
        "sources": data.sources,
        "n_windows": len(data),
        "n_train": int(n_train),
        "n_val": int(n_val),
        "window_s": preprocess.window_s,
        "hours": len(data) * (preprocess.window_s / 3600.0),
        "dropped": data.dropped,
    }


def _runtime_info(device: torch.device, threads: int, precision: str, dist: Ranks) -> dict:
    """``pretrain.json``'s device, threads, processes, precision and versions."""
    return {
        "device": str(device),
        "threads": threads,
        "processes": dist.world_size,
        "backend": ("nccl" if device.type == "cuda" else "gloo") if dist.enabled else None,
        "precision": precision,
        "versions": versions(),
    }


def _log_start(
    config: PretrainConfig,
    data: UnlabelledWindows,
    preprocess: PreprocessConfig,
    n_val: int,
    steps_per_epoch: int,
    device: torch.device,
    precision: str,
) -> None:
    """One log line naming the model, the data, the objective and the device."""
    logger.info(
        "pretraining %s depth %d on %d windows (%.1f h; %d held out) from %d source(s): "
        "%s, %d steps per epoch, device %s, %s",
        config.model.backbone,
        config.model.depth,
        len(data),
        len(data) * (preprocess.window_s / 3600.0),
        n_val,
        len(data.sources),
        config.objective.name,
        steps_per_epoch,
        device,
        precision,
    )


@dataclass
class _BatchLoss:
    """The objective on windows ``rows``; while training through the DDP wrapper (when there is
    one) and autocast, the spectrograms always in float32."""

    data: UnlabelledWindows
    preprocess: PreprocessConfig
    device: torch.device
    partners: PartnerIndex | None
    model: nn.Module
    autocast: torch.autocast
    forward: nn.Module  # the model, or its DDP wrapper

    def __call__(self, rows: np.ndarray, generator: torch.Generator, training: bool = False):
        spec = self._spectrograms(torch.as_tensor(rows))
        inputs: tuple = (spec,)
        if self.partners is not None:
            other = torch.as_tensor(self.partners.draw(rows, generator))
            inputs = (spec, self._spectrograms(other), torch.as_tensor(self.partners.codes[rows]))
        with self.autocast if training else contextlib.nullcontext():
            return (self.forward if training else self.model)(*inputs, generator=generator).loss

    def _spectrograms(self, rows: torch.Tensor) -> torch.Tensor:
        """The spectrograms of windows ``rows``, on the device."""
        return spectrogram_batch(self.data.waveforms[rows], self.preprocess).to(self.device)


def _distributed(model: nn.Module, device: torch.device, dist: Ranks) -> nn.Module:
    """The model wrapped in DDP under torchrun (gradients averaged over ranks), else itself."""
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def _progress_bar_class(progress: bool):
    """tqdm when progress is shown, else None."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm


@dataclass
class _Epochs:
    """What every epoch uses: the model, its optimizer, the objective and the batch plan."""

    config: PretrainConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    batch_loss: _BatchLoss
    train_idx: np.ndarray
    val_idx: np.ndarray
    batch_size: int
    steps_per_epoch: int
    dist: Ranks
    bar_cls: type | None

    def run(self, epoch: int) -> tuple[dict, list[float]]:
        """Train epoch ``epoch`` (from 0) and score the held-out windows: the history entry and
        the loss of every step."""
        config, batch_size = self.config, self.batch_size
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        order = self.train_idx[torch.randperm(len(self.train_idx), generator=generator).numpy()]
        self.model.train()
        losses: list[float] = []
        bar = self._bar(epoch)
        t_epoch = time.perf_counter()
        for step in range(self.steps_per_epoch):
            lr = learning_rate(config, epoch * self.steps_per_epoch + step, self.steps_per_epoch)
            batch = order[step * batch_size : (step + 1) * batch_size]
            value = self._step(batch, generator, lr)
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
        val_loss = _held_out_loss(self.model, self.batch_loss, self.val_idx, config.seed)
        windows = self.steps_per_epoch * batch_size
        entry = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)),
            "val_loss": val_loss,
            "lr_end": lr,
            "seconds": seconds,
            "windows": windows,
            "windows_per_s": windows / seconds,
        }
        return entry, losses

    def _step(self, batch: np.ndarray, generator: torch.Generator, lr: float) -> float:
        """One optimizer step on this rank's share of ``batch``: the loss averaged over ranks."""
        dist = self.dist
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self.batch_loss(batch[dist.rank :: dist.world_size], generator, training=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), self.config.optim.grad_clip_norm or math.inf
        )
        self.optimizer.step()
        return dist.sum([float(loss.detach())])[0] / dist.world_size

    def _bar(self, epoch: int):
        """The epoch's progress bar in windows, or None."""
        if self.bar_cls is None:
            return None
        return self.bar_cls(
            total=self.steps_per_epoch * self.batch_size,
            desc=f"pretrain epoch {epoch + 1}/{self.config.optim.epochs}",
            unit="window",
        )


def _record_epoch(state: dict, entry: dict, losses: list[float], n_windows: int) -> None:
    """Add a finished epoch to the resume state."""
    state["history"].append(entry)
    state["step_losses"].extend(losses)
    state["epochs_done"] = entry["epoch"]
    state["n_windows"] = n_windows


def _log_epoch(config: PretrainConfig, entry: dict) -> None:
    """One log line per finished epoch."""
    val_loss = entry["val_loss"]
    logger.info(
        "epoch %d/%d: loss %.4f, held-out %s, %.0f windows/s, %.0f s",
        entry["epoch"],
        config.optim.epochs,
        entry["train_loss"],
        "-" if val_loss is None else f"{val_loss:.4f}",
        entry["windows_per_s"],
        entry["seconds"],
    )


@dataclass
class _Outputs:
    """The run folder's files that change after every epoch."""

    out: Path
    encoder: HybridViT
    info_base: dict
    state: dict
    window_h: float
    data_s: float

    def write(self, complete: bool) -> dict:
        """Write the encoder, the loss (JSON and plot) and ``pretrain.json``; its content."""
        save_encoder(self.encoder, self.out / ENCODER_FILE)
        info = self.summary(complete)
        loss = {"history": self.state["history"], "step_losses": self.state["step_losses"]}
        write_text_atomic(self.out / LOSS_JSON, json.dumps(loss) + "\n")
        write_loss_plot(self.out / LOSS_PNG, self.state["history"], self.state["step_losses"])
        write_text_atomic(self.out / PRETRAIN_FILE, json.dumps(info, indent=2) + "\n")
        return info

    def summary(self, complete: bool) -> dict:
        """The content of ``pretrain.json`` after the epochs done so far."""
        history = self.state["history"]
        seconds = sum(h["seconds"] for h in history)
        seen = sum(h["windows"] for h in history)
        return {
            **self.info_base,
            "complete": complete,
            "init": self.state["init"],
            "progress": {
                "epochs_done": self.state["epochs_done"],
                "windows_seen": seen,
                "hours_seen": seen * self.window_h,
                "first_loss": history[0]["train_loss"] if history else None,
                "final_loss": history[-1]["train_loss"] if history else None,
                "first_val_loss": history[0].get("val_loss") if history else None,
                "final_val_loss": history[-1].get("val_loss") if history else None,
            },
            "timings": {
                "data_s_this_process": self.data_s,
                "training_s": seconds,
                "windows_per_s": seen / seconds if seconds else None,
            },
            "files": {
                "encoder": ENCODER_FILE,
                "loss": [LOSS_JSON, LOSS_PNG],
                "config": CONFIG_FILE,
                "resume": RESUME_FILE,
                "skipped": SKIPPED_FILE,
            },
        }


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
