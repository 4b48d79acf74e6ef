"""Training of one fold: AdamW, warm-up + cosine, label smoothing, clipping, early stopping.

All training windows sit in one ``(N, 3, n)`` tensor (in memory or memory-mapped: batches and
validation windows are gathered from it a batch at a time); each batch is augmented as a whole
(waveform steps, then ``spectrogram_batch``, then masking), so no per-sample Python runs in the
inner loop. The checkpoint is chosen on the fold's grouped validation split; the test fold is
never seen here.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, log_loss
from torch import nn

from quake.classes import ClassNames
from quake.data import PreprocessConfig, spectrogram_batch
from quake.models import HybridViT, PretrainedUnavailableError
from quake.probabilities import LOG_PROB_EPS, model_probabilities
from quake.runtime import AUTOCAST_DTYPES, SINGLE, Ranks, resolve_precision
from quake.training.augment import Augmenter
from quake.training.config import ModelConfig, OptimConfig
from quake.training.selection import BestEpochs, CheckpointRule, WeightAverage

logger = logging.getLogger(__name__)


class PretrainedResolver:
    """Turns ``model.pretrained`` (auto | none | PATH) into HybridViT's argument, once per run.

    ``auto`` tries timm's ImageNet weights (cache or hub); when they cannot be had it warns
    loudly, once, and every fold trains from random init. A PATH is a timm weights file or a
    pretraining folder (``quake pretrain``; :mod:`quake.models.encoder`), whose run is then
    named in :attr:`status`. What happened is in :attr:`status`.
    """

    def __init__(self, requested: str):
        self.requested = requested
        self._resolved: bool | str | None = None
        self.status: dict = {"requested": requested}

    def resolve(self, build) -> bool | str:
        """``build(pretrained)`` constructs a model; it is tried once for ``auto``."""
        if self._resolved is not None:
            return self._resolved
        if self.requested == "none":
            self._resolved = False
            self.status["note"] = "random initialisation, as configured (pretrained: none)"
        elif self.requested == "auto":
            try:
                build(True)
                self._resolved = True
                self.status["note"] = "timm ImageNet weights"
            except PretrainedUnavailableError as error:
                logger.warning(
                    "=" * 20 + " PRETRAINED WEIGHTS UNAVAILABLE " + "=" * 20 + "\n"
                    "pretrained=auto: timm's ImageNet weights are neither cached nor downloadable "
                    "(%s).\nTraining from RANDOM INITIALISATION; the report records this.",
                    error,
                )
                self._resolved = False
                self.status["note"] = f"unavailable, random initialisation ({error})"
        else:
            # an unreadable or unfitting file stops the run before training
            model = build(self.requested)
            run = getattr(model, "pretrained_info", {}).get("pretrain_run")
            self._resolved = self.requested
            self.status["note"] = f"weights file {self.requested}"
            if run is not None:
                self.status["pretrain_run"] = run
                self.status["note"] = (
                    f"pretraining run {run['folder']} ({run['objective']}, "
                    f"{run['epochs_done']} epochs, {run['windows_seen']} windows seen, "
                    f"sources {run['sources']}): stem, CLS token, position embedding, blocks and "
                    "norm loaded, head initialised"
                )
        return self._resolved


def build_model(
    model_config: ModelConfig,
    *,
    pretrained: bool | str,
    class_names: ClassNames,
    img_size: tuple[int, int],
) -> HybridViT:
    return HybridViT(
        backbone=model_config.backbone,
        depth=model_config.depth,
        in_channels=3,
        num_classes=len(class_names),
        img_size=tuple(img_size),
        dropout=model_config.dropout,
        freeze_backbone=model_config.freeze_backbone,
        pretrained=pretrained,
        drop_path_rate=model_config.drop_path_rate,
        class_names=class_names,
        fusion=model_config.fusion,
    )


def make_optimizer(model: nn.Module, optim: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; the fused kernel where torch has it (5x faster steps for this many small tensors)."""
    groups = parameter_groups(model, optim.weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=optim.lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=optim.lr)


def attention_backend(device: torch.device):
    """On CPU, plain (math) attention for training: with a few dozen tokens, the fused
    flash-attention kernel's backward pass costs several times more."""
    if device.type != "cpu":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``n / (C * count)``; a class absent from training gets 1."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR factor: linear warm-up to 1, then cosine down to ``min_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and conv kernels only (not biases, norms, tokens)."""
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or name in skip else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


@dataclass
class FoldFit:
    """A trained fold model (best checkpoint loaded) and how it got there."""

    model: HybridViT
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    samples_per_s: float = 0.0


def _selection_score(metric: str, entry: dict) -> float:
    """Higher is better."""
    if metric == "loss":
        return -entry["val_loss"]
    return entry[f"val_{metric}"]


def probabilities_at(
    model: nn.Module,
    waveforms: torch.Tensor,
    indices: np.ndarray,
    config: PreprocessConfig,
    *,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """:func:`~quake.probabilities.model_probabilities` of the rows ``indices`` of ``waveforms``,
    gathered one batch at a time: never more than ``batch_size`` windows are copied out, so a
    memory-mapped set is read a batch at a time rather than copied whole."""
    indices = np.asarray(indices, dtype=np.int64)
    parts = [
        model_probabilities(
            model,
            waveforms[torch.tensor(indices[start : start + batch_size])],
            config,
            batch_size=batch_size,
            device=device,
        )
        for start in range(0, len(indices), batch_size)
    ]
    if not parts:
        return model_probabilities(
            model, waveforms[:0], config, batch_size=batch_size, device=device
        )
    return np.concatenate(parts)


def evaluate(
    model: nn.Module,
    waveforms: torch.Tensor,
    labels: np.ndarray,
    config: PreprocessConfig,
    n_classes: int,
    *,
    batch_size: int,
    device: torch.device,
    weights: torch.Tensor | None = None,
    dist: Ranks = SINGLE,
    indices: np.ndarray | None = None,
) -> dict:
    """Validation loss (class-weighted like the training loss when ``weights`` is given, so
    that on an imbalanced set the checkpoint is not chosen for the majority class alone),
    macro F1 and balanced accuracy of the rows ``indices`` of ``waveforms`` (all rows when
    None), whose labels are ``labels``. Across ranks each scores a part and all get every row."""
    if indices is None:
        indices = np.arange(len(waveforms))
    part = np.asarray(indices, dtype=np.int64)[dist.shard(len(indices))]
    probs = dist.gather_rows(
        probabilities_at(model, waveforms, part, config, batch_size=batch_size, device=device)
    )
    pred = probs.argmax(axis=1)
    clipped = np.clip(probs, LOG_PROB_EPS, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    sample_weight = None if weights is None else weights.cpu().numpy()[labels]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bal = balanced_accuracy_score(labels, pred)
    return {
        "val_loss": float(
            log_loss(labels, clipped, labels=list(range(n_classes)), sample_weight=sample_weight)
        ),
        "val_macro_f1": float(
            f1_score(labels, pred, labels=list(range(n_classes)), average="macro", zero_division=0)
        ),
        "val_balanced_accuracy": float(bal),
    }


def training_forward(
    model: nn.Module, *, device: torch.device, dist: Ranks, compile_model: bool
) -> nn.Module:
    """What the training steps call: the model, inside DDP across ranks, compiled if asked.

    DDP registers the parameters that require gradients when it is built, so it is built again
    whenever the backbone is frozen or unfrozen.
    """
    forward = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    if compile_model:
        forward = torch.compile(forward)
    return forward


def train_fold(
    waveforms: torch.Tensor,
    labels: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    model: HybridViT,
    optim: OptimConfig,
    preprocess: PreprocessConfig,
    augmenter: Augmenter,
    seed: int,
    device: torch.device,
    keep_backbone_frozen: bool = False,
    eval_batch_size: int = 256,
    progress: bool = False,
    description: str = "",
    position: int = 0,
    dist: Ranks = SINGLE,
    compile_model: bool = False,
) -> FoldFit:
    """Train ``model`` on ``train_idx``, choose the epoch on ``val_idx``; returns the best model.

    The backbone is frozen for the first ``optim.frozen_epochs`` epochs (two-stage schedule), or
    for the whole run with ``keep_backbone_frozen``. Across ranks (``dist``), each global batch
    of ``optim.batch_size`` windows is split over the ranks and DDP averages the gradients, so
    the schedule and the checkpoint choice are those of one process.
    """
    n_classes = model.num_classes
    labels = np.asarray(labels, dtype=np.int64)
    _check_fold_sizes(len(train_idx), len(val_idx), optim.batch_size, dist)
    generator = _fold_generator(seed, augmenter, dist)
    model.to(device)
    batch_size = min(optim.batch_size, len(train_idx))
    steps_per_epoch = max(1, len(train_idx) // batch_size)  # drop the ragged last batch
    optimizer = make_optimizer(model, optim, device)
    balance = class_weights(labels[train_idx], n_classes)
    precision = resolve_precision(optim.precision, device)
    steps = _FoldSteps(
        waveforms=waveforms,
        labels=labels,
        train_idx=torch.as_tensor(train_idx, dtype=torch.long),
        model=model,
        optim=optim,
        preprocess=preprocess,
        augmenter=augmenter,
        device=device,
        dist=dist,
        generator=generator,
        optimizer=optimizer,
        scheduler=_lr_schedule(optimizer, optim, steps_per_epoch),
        criterion=_criterion(balance, optim, device),
        sample_weights=_sample_weights(labels[train_idx], n_classes, optim),
        precision=precision,
        # fp16 needs loss scaling; an overflowing step is then part of finding the scale
        scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        average=WeightAverage(model, optim.ema_decay) if optim.ema_decay is not None else None,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        keep_backbone_frozen=keep_backbone_frozen,
        compile_model=compile_model,
    )
    val_idx = np.asarray(val_idx, dtype=np.int64)  # scored a batch at a time, never copied out
    judged = model if steps.average is None else steps.average.model  # the weights scored and kept
    validate = functools.partial(
        evaluate, judged, waveforms, labels[val_idx], preprocess, n_classes,
        batch_size=eval_batch_size, device=device,
        weights=None if optim.class_balance == "none" else balance, dist=dist, indices=val_idx,
    )  # fmt: skip
    history: list[dict] = []
    rule = CheckpointRule(
        min_epochs=optim.min_epochs, smoothing=optim.selection_smoothing, patience=optim.patience
    )
    best = BestEpochs(optim.average_best)  # the weights the fold keeps
    start = time.perf_counter()
    seen = 0
    train_seconds = 0.0
    for epoch in range(1, optim.epochs + 1):
        order = steps.start_epoch(epoch)
        epoch_start = time.perf_counter()
        desc = f"{description} epoch {epoch}/{optim.epochs}".strip()
        bar = _epoch_bar(desc, steps_per_epoch, shown=progress and dist.is_main, position=position)
        tally = steps.run_epoch(order, bar)
        train_seconds += time.perf_counter() - epoch_start
        loss_sum, loss_n = dist.sum([tally.loss_sum, float(tally.loss_n)])
        seen += int(loss_n)
        entry = {
            "epoch": epoch,
            "train_loss": loss_sum / max(loss_n, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "backbone_frozen": bool(model.backbone_frozen),
            "skipped_steps": tally.skipped,
            **validate(),
            "seconds": time.perf_counter() - epoch_start,
        }
        history.append(entry)
        if tally.skipped:
            _warn_skipped_steps(description, epoch, tally.skipped, steps)
            steps.precision = "fp32"
        improved, stop = rule.update(_selection_score(optim.selection_metric, entry))
        if rule.judged_score is not None and math.isfinite(rule.judged_score):
            best.offer(rule.judged_score, epoch, judged)
        _log_epoch(description, optim.epochs, entry, improved)
        if stop and epoch > optim.frozen_epochs:
            logger.info(
                "%s: early stop after epoch %d (best %d)", description, epoch, rule.best_epoch
            )
            break
    _keep_best_weights(model, best, optim.average_best, description)
    model.eval()
    return FoldFit(
        model=model,
        history=history,
        best_epoch=rule.best_epoch or len(history),
        seconds=time.perf_counter() - start,
        samples_per_s=seen / train_seconds if train_seconds > 0 else 0.0,
    )


# --- the steps of a fold ------------------------------------------------------------------------
def _check_fold_sizes(n_train: int, n_val: int, batch_size: int, dist: Ranks) -> None:
    """A ValueError unless the fold has training and validation traces and every rank gets at
    least one window of a batch."""
    if n_train == 0 or n_val == 0:
        raise ValueError(f"a fold needs training and validation traces, got {n_train} and {n_val}")
    if min(batch_size, n_train) < dist.world_size:
        raise ValueError(
            f"optim.batch_size {batch_size} (or the {n_train} training traces) cannot "
            f"be split over {dist.world_size} processes; expected at least one window per process"
        )


def _fold_generator(seed: int, augmenter: Augmenter, dist: Ranks) -> torch.Generator:
    """The shuffling generator; the augmenter gets its own per rank, else shares it."""
    generator = torch.Generator().manual_seed(seed)
    # One process: one random stream for shuffling and augmentation. Across ranks the shuffle
    # must be the same on every rank and the augmentation must not be.
    augmenter.generator = (
        torch.Generator().manual_seed(seed + 104_729 * (dist.rank + 1))
        if dist.enabled
        else generator
    )
    return generator


def _lr_schedule(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine to ``lr * min_lr_ratio``, stepped once per batch."""
    total_steps = steps_per_epoch * optim.epochs
    warmup_steps = int(round(optim.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(
            step, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=optim.min_lr_ratio
        ),
    )


def _criterion(balance: torch.Tensor, optim: OptimConfig, device: torch.device) -> nn.Module:
    """Cross-entropy with label smoothing, class-weighted under ``weighted_loss``."""
    weight = balance if optim.class_balance == "weighted_loss" else None
    return nn.CrossEntropyLoss(
        weight=None if weight is None else weight.to(device), label_smoothing=optim.label_smoothing
    )


def _sample_weights(
    train_labels: np.ndarray, n_classes: int, optim: OptimConfig
) -> torch.Tensor | None:
    """Per-window draw weights that balance the classes under ``balanced_sampling``, else None."""
    if optim.class_balance != "balanced_sampling":
        return None
    counts = np.bincount(train_labels, minlength=n_classes)
    return torch.tensor(1.0 / counts[train_labels], dtype=torch.float64)


@dataclass
class _EpochTally:
    """One epoch's summed training loss and windows on this rank, and its skipped steps."""

    loss_sum: float = 0.0
    loss_n: int = 0
    skipped: int = 0


@dataclass
class _FoldSteps:
    """The optimisation of one fold: model, optimizer, schedule, loss and batch plan. The
    precision falls back to fp32 after an epoch with skipped steps."""

    waveforms: torch.Tensor
    labels: np.ndarray
    train_idx: torch.Tensor
    model: HybridViT
    optim: OptimConfig
    preprocess: PreprocessConfig
    augmenter: Augmenter
    device: torch.device
    dist: Ranks
    generator: torch.Generator
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    criterion: nn.Module
    sample_weights: torch.Tensor | None
    precision: str
    scaler: torch.amp.GradScaler
    average: WeightAverage | None
    batch_size: int
    steps_per_epoch: int
    keep_backbone_frozen: bool
    compile_model: bool
    forward: nn.Module | None = None  # what the steps call; rebuilt when the stage changes

    def start_epoch(self, epoch: int) -> torch.Tensor:
        """Set the backbone's stage for ``epoch`` and draw the order of its training windows."""
        model = self.model
        want_frozen = self.keep_backbone_frozen or epoch <= self.optim.frozen_epochs
        if want_frozen and not model.backbone_frozen:
            model.freeze_backbone()
            self.forward = None
        elif not want_frozen and model.backbone_frozen:
            model.unfreeze_backbone()  # second stage of the two-stage schedule
            self.forward = None
        if self.forward is None:
            self.forward = training_forward(
                model, device=self.device, dist=self.dist, compile_model=self.compile_model
            )
        model.train()
        if self.sample_weights is None:
            return self.train_idx[torch.randperm(len(self.train_idx), generator=self.generator)]
        picks = torch.multinomial(
            self.sample_weights, len(self.train_idx), replacement=True, generator=self.generator
        )
        return self.train_idx[picks]

    def run_epoch(self, order: torch.Tensor, bar) -> _EpochTally:
        """The steps of one epoch over ``order``, this rank's share of each global batch."""
        tally = _EpochTally()
        dist = self.dist
        for step in range(self.steps_per_epoch):
            global_batch = order[step * self.batch_size : (step + 1) * self.batch_size]
            idx = global_batch[dist.rank :: dist.world_size]
            loss = self._step(idx)
            if loss is None:
                if not self.scaler.is_enabled():
                    tally.skipped += 1
                bar.update(1)
                continue
            tally.loss_sum += loss * len(idx)
            tally.loss_n += len(idx)
            bar.update(1)
            bar.set_postfix(loss=f"{tally.loss_sum / max(tally.loss_n, 1):.3f}")
        bar.close()
        dist.average_buffers(self.model)
        return tally

    def _step(self, idx: torch.Tensor) -> float | None:
        """One optimizer step on windows ``idx``: its loss, or None when a non-finite loss or
        gradient on any rank had it undone."""
        model = self.model
        x = self.augmenter.waveforms(self.waveforms[idx].to(self.device, non_blocking=True))
        spec = self.augmenter.spectrograms(spectrogram_batch(x, self.preprocess))
        y = torch.as_tensor(self.labels[idx.numpy()], device=self.device)
        saved_buffers = [b.detach().clone() for b in model.buffers()]
        with attention_backend(self.device), self._autocast():
            logits = self.forward(spec)
        loss = self.criterion(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), self._max_norm())
        bad = not (torch.isfinite(loss) and torch.isfinite(grad_norm))
        if self.dist.any(bad):
            self._undo_step(saved_buffers)
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.average is not None:
            self.average.update(model)
        return float(loss.detach())

    def _undo_step(self, saved_buffers: list[torch.Tensor]) -> None:
        """Drop a bad step's gradients and buffer updates, keeping the schedule on time: one bad
        batch (e.g. a reduced-precision overflow) must not poison the weights."""
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():  # BatchNorm statistics saw the bad batch too
            for buffer, saved in zip(self.model.buffers(), saved_buffers, strict=True):
                buffer.copy_(saved)
        if self.scaler.is_enabled():
            self.scaler.update()  # a smaller loss scale next time
        _advance(self.scheduler)

    def _autocast(self) -> torch.autocast:
        """Autocast at the current precision (off for fp32)."""
        return torch.autocast(
            self.device.type,
            dtype=AUTOCAST_DTYPES.get(self.precision, torch.float32),
            enabled=self.precision in AUTOCAST_DTYPES,
        )

    def _max_norm(self) -> float:
        """The gradient clipping norm (none: infinite)."""
        norm = self.optim.grad_clip_norm
        return norm if norm is not None else math.inf


def _epoch_bar(description: str, steps: int, *, shown: bool, position: int):
    """A progress bar over one epoch's batches, removed when the epoch ends."""
    return _tqdm()(
        total=steps,
        desc=description,
        unit="batch",
        leave=False,
        disable=not shown,
        position=position,
    )


def _warn_skipped_steps(description: str, epoch: int, skipped: int, steps: _FoldSteps) -> None:
    """Warn of an epoch's skipped steps, naming the fall-back to float32 under bf16."""
    logger.warning(
        "%s epoch %d: skipped %d of %d steps with a non-finite loss or gradient%s",
        description,
        epoch,
        skipped,
        steps.steps_per_epoch,
        "; going on in float32" if steps.precision == "bf16" else "",
    )


def _log_epoch(description: str, epochs: int, entry: dict, improved: bool) -> None:
    """One log line per epoch, starred when the selection score improved."""
    logger.info(
        "%s epoch %d/%d: train loss %.4f, val loss %.4f, val macro-F1 %.3f, val bal. acc. %.3f%s",
        description,
        entry["epoch"],
        epochs,
        entry["train_loss"],
        entry["val_loss"],
        entry["val_macro_f1"],
        entry["val_balanced_accuracy"],
        " *" if improved else "",
    )


def _keep_best_weights(
    model: HybridViT, best: BestEpochs, average_best: int, description: str
) -> None:
    """Load the chosen epochs' weights (averaged when several); with no finite validation
    score the last weights stay."""
    kept = best.averaged()
    if kept is None:
        return
    model.load_state_dict(kept)
    if average_best > 1:
        logger.info("%s: weights averaged over epochs %s", description, best.epochs)


def _advance(scheduler) -> None:
    """Keep the schedule on time over a skipped step (without torch's order warning)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()


def _tqdm():
    from tqdm.auto import tqdm

    return tqdm


def progress_enabled(quiet: bool) -> bool:
    """Progress bars only on an interactive terminal and when not asked to be quiet."""
    return not quiet and sys.stderr.isatty()
