"""The folds of a run: the deep model and the spectral baseline on the very same splits.

Each deep fold is resumable: its model, test predictions and a ``fold.json`` completion marker
(written last, atomically) go to ``folds/fold_<k>/``; a rerun with the same config finds the
marker and reads the fold back instead of training it again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from quake.classes import NOISE, ClassNames
from quake.data import PreprocessConfig, TransformOP
from quake.inference import model_probabilities
from quake.models import HybridViT
from quake.training.augment import Augmenter, build_noise_bank
from quake.training.baseline import SpectralForestBaseline, feature_names, spectral_features
from quake.training.config import TrainConfig
from quake.training.loop import PretrainedResolver, build_model, train_fold
from quake.training.splits import Fold

logger = logging.getLogger(__name__)

FOLD_MARKER = "fold.json"
PROB_PREFIX = "prob_"


def prob_column(class_name: str) -> str:
    """``"quarry blast"`` -> ``"prob_quarry_blast"`` (the batch classification convention)."""
    return PROB_PREFIX + class_name.replace(" ", "_")


@dataclass
class CVData:
    """Everything the folds need, materialised once."""

    waveforms: torch.Tensor  # (N, 3, window_samples) float32, trimmed, before z-score
    labels: np.ndarray  # (N,) int64
    class_names: ClassNames
    trace_names: np.ndarray
    source_ids: np.ndarray
    preprocess: PreprocessConfig
    pre_event_samples: int = 0  # samples of pre-event noise at the start of each window

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@dataclass
class FoldOutcome:
    fold: int
    probs: np.ndarray  # test-fold probabilities, rows in fold.test order
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    samples_per_s: float = 0.0
    seed: int = 0
    pretrained_info: dict = field(default_factory=dict)
    resumed: bool = False


def fold_seed(seed: int, fold: int) -> int:
    return seed * 1000 + fold


def predictions_frame(
    data: CVData, indices: np.ndarray, probs: np.ndarray, fold: int
) -> pd.DataFrame:
    """One row per test trace: ids, true label and the probability of every class."""
    frame = pd.DataFrame(
        {
            "index": indices,
            "fold": fold,
            "trace_name": data.trace_names[indices],
            "source_id": data.source_ids[indices],
            "y_true": data.labels[indices],
            "true_class": data.class_names.decode(data.labels[indices]),
        }
    )
    for c, name in enumerate(data.class_names):
        frame[prob_column(name)] = probs[:, c]
    return frame


def probs_from_frame(frame: pd.DataFrame, class_names: ClassNames) -> np.ndarray:
    return frame[[prob_column(c) for c in class_names]].to_numpy(dtype=np.float64)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_baseline(data: CVData, folds: list[Fold], config: TrainConfig, n_jobs: int | None) -> dict:
    """Spectral features + random forest on each fold's train + validation part, test once."""
    start = time.perf_counter()
    fs = data.preprocess.sampling_rate_hz
    features = spectral_features(data.waveforms.numpy(), fs)
    feature_seconds = time.perf_counter() - start
    probs, models = [], None
    for fold in folds:
        fit_idx = np.concatenate([fold.train, fold.val])
        forest = SpectralForestBaseline(
            n_estimators=config.baseline.n_estimators,
            max_depth=config.baseline.max_depth,
            min_samples_leaf=config.baseline.min_samples_leaf,
            seed=fold_seed(config.seed, fold.index),
            n_jobs=n_jobs,
        ).fit(features[fit_idx], data.labels[fit_idx])
        probs.append(forest.predict_proba(features[fold.test], data.n_classes))
        models = str(forest)
    seconds = time.perf_counter() - start
    logger.info("baseline: %d features, %d folds in %.1f s", features.shape[1], len(folds), seconds)
    return {
        "probs": probs,
        "model": models,
        "feature_names": feature_names(fs),
        "seconds": seconds,
        "feature_seconds": feature_seconds,
    }


def _noise_label(class_names: ClassNames) -> int | None:
    return class_names.index(NOISE) if NOISE in class_names else None


def pre_event_samples(preprocess: PreprocessConfig) -> int:
    """Samples before the anchor at the start of each window (pre-P noise) when anchored on P."""
    if TransformOP.TRIMMING in preprocess.transforms and preprocess.anchor == "p_arrival":
        # leave half a second before the pick: picks are not exact
        return max(0, int(round((preprocess.pre_arrival_s - 0.5) * preprocess.sampling_rate_hz)))
    return 0


def run_deep_fold(
    data: CVData,
    fold: Fold,
    config: TrainConfig,
    fold_dir: Path,
    resolver: PretrainedResolver,
    *,
    device: torch.device,
    progress: bool,
) -> FoldOutcome:
    """Train, choose the checkpoint on validation, predict the test fold once, save it all."""
    img_size = tuple(data.preprocess.spectrogram_shape[1:])

    def build(pretrained):
        return build_model(
            config.model, pretrained=pretrained, class_names=data.class_names, img_size=img_size
        )

    pretrained = resolver.resolve(build)  # before seeding: the tries must not shift the seed
    seed = fold_seed(config.seed, fold.index)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    model = build(pretrained)
    noise_bank = build_noise_bank(
        data.waveforms,
        data.labels,
        fold.train,
        _noise_label(data.class_names),
        pre_event_samples=data.pre_event_samples,
        seed=seed,
    )
    augmenter = Augmenter.from_config(
        config.augment,
        sampling_rate_hz=data.preprocess.sampling_rate_hz,
        missing_component=data.preprocess.missing_component,
        noise_bank=noise_bank,
    )
    logger.info(
        "fold %d: %d train, %d val, %d test traces; augmentation: %s",
        fold.index,
        len(fold.train),
        len(fold.val),
        len(fold.test),
        augmenter,
    )
    fit = train_fold(
        data.waveforms,
        data.labels,
        fold.train,
        fold.val,
        model=model,
        optim=config.optim,
        preprocess=data.preprocess,
        augmenter=augmenter,
        seed=seed,
        device=device,
        keep_backbone_frozen=config.model.freeze_backbone,
        eval_batch_size=config.run.eval_batch_size,
        progress=progress,
        description=f"fold {fold.index}",
    )
    test_x = data.waveforms[torch.as_tensor(fold.test, dtype=torch.long)]
    probs = model_probabilities(
        fit.model, test_x, data.preprocess, batch_size=config.run.eval_batch_size, device=device
    )
    outcome = FoldOutcome(
        fold=fold.index,
        probs=probs,
        history=fit.history,
        best_epoch=fit.best_epoch,
        seconds=fit.seconds,
        samples_per_s=fit.samples_per_s,
        seed=seed,
        pretrained_info=_summarise_pretrained(model.pretrained_info),
    )
    save_fold(fold_dir, data, fold, outcome, fit.model)
    return outcome


def _summarise_pretrained(info: dict) -> dict:
    summary = {k: v for k, v in info.items() if k not in ("loaded",)}
    summary["n_loaded"] = len(info.get("loaded", []))
    return summary


def save_fold(
    fold_dir: Path, data: CVData, fold: Fold, outcome: FoldOutcome, model: HybridViT
) -> None:
    fold_dir.mkdir(parents=True, exist_ok=True)
    model.cpu().save(fold_dir / "model")
    frame = predictions_frame(data, fold.test, outcome.probs, fold.index)
    _write_atomic(fold_dir / "predictions.csv", frame.to_csv(index=False))
    marker = {
        "fold": fold.index,
        "seed": outcome.seed,
        "best_epoch": outcome.best_epoch,
        "seconds": outcome.seconds,
        "samples_per_s": outcome.samples_per_s,
        "n_train": len(fold.train),
        "n_val": len(fold.val),
        "n_test": len(fold.test),
        "pretrained_info": outcome.pretrained_info,
        "history": outcome.history,
        "completed_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _write_atomic(fold_dir / FOLD_MARKER, json.dumps(marker, indent=2) + "\n")


def load_fold(fold_dir: Path, data: CVData, fold: Fold) -> FoldOutcome | None:
    """A completed fold read back, or None when it is not complete (or does not match)."""
    marker_path = fold_dir / FOLD_MARKER
    if not marker_path.is_file():
        return None
    marker = json.loads(marker_path.read_text())
    frame = pd.read_csv(fold_dir / "predictions.csv")
    if frame["index"].tolist() != fold.test.tolist():
        raise ValueError(
            f"{fold_dir} holds predictions for other test traces than fold {fold.index} now has; "
            "the data changed since the run started: use a new --out folder"
        )
    return FoldOutcome(
        fold=fold.index,
        probs=probs_from_frame(frame, data.class_names),
        history=marker["history"],
        best_epoch=marker["best_epoch"],
        seconds=marker["seconds"],
        samples_per_s=marker.get("samples_per_s", 0.0),
        seed=marker["seed"],
        pretrained_info=marker.get("pretrained_info", {}),
        resumed=True,
    )


def load_fold_model(fold_dir: Path) -> HybridViT:
    return HybridViT.load(fold_dir / "model")
