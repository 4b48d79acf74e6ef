"""The folds of a run: the deep model and the spectral baseline on the very same splits.

Each deep fold is resumable: its model, test predictions and a ``fold.json`` completion marker
(written last, atomically) go to ``folds/fold_<k>/``; a rerun with the same config finds the
marker and reads the fold back instead of training it again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import logging.handlers
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from quake.classes import NOISE, ClassNames
from quake.data import PreprocessConfig, TransformOP
from quake.models import HybridViT
from quake.models.forest import (
    SpectralForestBaseline,
    feature_names,
    feature_segments,
    spectral_features,
)
from quake.probabilities import prob_column
from quake.processes import DieWithParent, initialize
from quake.runtime import SINGLE, Ranks, write_text_atomic
from quake.training.augment import Augmenter, build_noise_bank
from quake.training.config import TrainConfig
from quake.training.loop import PretrainedResolver, build_model, probabilities_at, train_fold
from quake.training.splits import Fold
from quake.training.window_cache import map_windows

logger = logging.getLogger(__name__)

FOLD_MARKER = "fold.json"
#: A fold's validation predictions (its kept weights on its validation split).
VAL_PREDICTIONS = "val_predictions.csv"


@dataclass
class CVData:
    """Everything the folds need, materialised once (the windows in memory or mapped)."""

    waveforms: torch.Tensor  # (N, 3, window_samples) float32, trimmed, before z-score
    labels: np.ndarray  # (N,) int64
    class_names: ClassNames
    trace_names: np.ndarray
    source_ids: np.ndarray
    preprocess: PreprocessConfig
    pre_event_samples: int = 0  # samples of pre-event noise at the start of each window
    # the .npy file ``waveforms`` is memory-mapped from (run.window_cache disk); None: in memory
    windows_path: Path | None = None
    # the set's own ``split`` column (train/dev/test) for cv.strategy predefined; None: none
    splits: np.ndarray | None = None
    # which items are the first window of their recording (windows_per_recording): only those
    # begin with pre-event noise; None: all
    first_windows: np.ndarray | None = None

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@dataclass
class FoldOutcome:
    fold: int
    probs: np.ndarray  # test-fold probabilities, rows in fold.test order
    # validation probabilities of the kept weights, rows in fold.val order (None: a fold
    # saved before they were written; the run computes them from the saved model)
    val_probs: np.ndarray | None = None
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


def run_baseline(data: CVData, folds: list[Fold], config: TrainConfig, n_jobs: int | None) -> dict:
    """Spectral features + random forest on each fold's train + validation part, test once;
    and a forest on the training part alone, for the validation probabilities the deployed
    model is chosen on (:mod:`quake.training.choice`)."""
    start = time.perf_counter()
    fs = data.preprocess.sampling_rate_hz
    segments = feature_segments(data.preprocess.window_s)
    features = spectral_features(data.waveforms.numpy(), fs, segments=segments)
    feature_seconds = time.perf_counter() - start
    probs, val_probs, models, forests = [], [], None, []

    def fitted(items: np.ndarray, fold: Fold) -> SpectralForestBaseline:
        return SpectralForestBaseline(
            n_estimators=config.baseline.n_estimators,
            max_depth=config.baseline.max_depth,
            min_samples_leaf=config.baseline.min_samples_leaf,
            seed=fold_seed(config.seed, fold.index),
            n_jobs=n_jobs,
        ).fit(features[items], data.labels[items])

    for fold in folds:
        forest = fitted(np.concatenate([fold.train, fold.val]), fold)
        probs.append(forest.predict_proba(features[fold.test], data.n_classes))
        forests.append(forest.forest)
        models = str(forest)
        if len(fold.val):
            on_train = fitted(fold.train, fold)
            val_probs.append(on_train.predict_proba(features[fold.val], data.n_classes))
        else:
            val_probs.append(np.zeros((0, data.n_classes)))
    seconds = time.perf_counter() - start
    logger.info("baseline: %d features, %d folds in %.1f s", features.shape[1], len(folds), seconds)
    return {
        "probs": probs,
        "val_probs": val_probs,  # forests of the training parts on the validation parts
        "model": models,
        "forests": forests,  # fitted sklearn forests, for deploy.strategy baseline
        "feature_names": feature_names(fs, segments),
        "segments": segments,  # stretches of the window the features describe
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


def resolve_pretrained(
    resolver: PretrainedResolver, data: CVData, config: TrainConfig
) -> bool | str:
    """What HybridViT's ``pretrained`` argument will be for every fold (tried once, here)."""
    img_size = tuple(data.preprocess.spectrogram_shape[1:])
    return resolver.resolve(
        lambda pretrained: build_model(
            config.model, pretrained=pretrained, class_names=data.class_names, img_size=img_size
        )
    )


def run_deep_fold(
    data: CVData,
    fold: Fold,
    config: TrainConfig,
    fold_dir: Path,
    pretrained: bool | str,
    *,
    device: torch.device,
    progress: bool,
    position: int = 0,
    dist: Ranks = SINGLE,
) -> FoldOutcome:
    """Train, choose the checkpoint on validation, predict the test fold once, save it all.

    Across ranks all train the fold together; rank 0 alone saves it."""
    img_size = tuple(data.preprocess.spectrogram_shape[1:])
    seed = fold_seed(config.seed, fold.index)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    model = build_model(
        config.model, pretrained=pretrained, class_names=data.class_names, img_size=img_size
    )
    train = np.asarray(fold.train)
    noise_bank = build_noise_bank(
        data.waveforms,
        data.labels,
        train if data.first_windows is None else train[data.first_windows[train]],
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
        position=position,
        dist=dist,
        compile_model=config.run.compile,
    )

    def predicted(items: np.ndarray) -> np.ndarray:
        return dist.gather_rows(
            probabilities_at(
                fit.model,
                data.waveforms,
                items[dist.shard(len(items))],
                data.preprocess,
                batch_size=config.run.eval_batch_size,
                device=device,
            )
        )

    outcome = FoldOutcome(
        fold=fold.index,
        probs=predicted(fold.test),
        val_probs=predicted(fold.val),
        history=fit.history,
        best_epoch=fit.best_epoch,
        seconds=fit.seconds,
        samples_per_s=fit.samples_per_s,
        seed=seed,
        pretrained_info=_summarise_pretrained(model.pretrained_info),
    )
    if dist.is_main:
        save_fold(fold_dir, data, fold, outcome, fit.model)
    dist.barrier()  # the fold is on disk before any rank goes on
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
    write_text_atomic(fold_dir / "predictions.csv", frame.to_csv(index=False))
    if outcome.val_probs is not None:
        frame = predictions_frame(data, fold.val, outcome.val_probs, fold.index)
        write_text_atomic(fold_dir / VAL_PREDICTIONS, frame.to_csv(index=False))
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
    write_text_atomic(fold_dir / FOLD_MARKER, json.dumps(marker, indent=2) + "\n")


def load_fold(
    fold_dir: Path, data: CVData, fold: Fold, *, resumed: bool = True
) -> FoldOutcome | None:
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
    val_path = fold_dir / VAL_PREDICTIONS
    val_frame = pd.read_csv(val_path) if val_path.is_file() else None
    if val_frame is not None and val_frame["index"].tolist() != fold.val.tolist():
        val_frame = None  # recomputed from the saved model
    return FoldOutcome(
        fold=fold.index,
        probs=probs_from_frame(frame, data.class_names),
        val_probs=None if val_frame is None else probs_from_frame(val_frame, data.class_names),
        history=marker["history"],
        best_epoch=marker["best_epoch"],
        seconds=marker["seconds"],
        samples_per_s=marker.get("samples_per_s", 0.0),
        seed=marker["seed"],
        pretrained_info=marker.get("pretrained_info", {}),
        resumed=resumed,
    )


def load_fold_model(fold_dir: Path) -> HybridViT:
    return HybridViT.load(fold_dir / "model")


def fold_dir_of(run_dir: Path, fold: Fold) -> Path:
    return run_dir / "folds" / f"fold_{fold.index}"


def run_deep_folds(
    data: CVData,
    folds: list[Fold],
    config: TrainConfig,
    run_dir: Path,
    pretrained: bool | str,
    *,
    device: torch.device,
    progress: bool,
    workers: int,
    threads: int,
    dist: Ranks = SINGLE,
) -> list[FoldOutcome]:
    """All folds: finished ones read back, the others trained (``workers`` at a time).

    Several CPU workers train folds side by side in separate processes, each with a share of
    the threads: a model this small keeps one core busy far better than it splits over two.
    Workers only write fold folders; the results are read back from them, as on resume.
    Under torchrun (``dist``) the ranks train each pending fold together, one fold at a time;
    rank 0 decides which folds are pending and alone gets the outcomes (others get ``[]``).
    """
    if dist.enabled:
        return _run_folds_distributed(
            data, folds, config, run_dir, pretrained, device=device, progress=progress, dist=dist
        )
    outcomes, pending = _completed_and_pending(data, folds, run_dir)
    workers = max(1, min(workers, len(pending)))
    if workers == 1:
        for fold in pending:
            outcomes[fold.index] = run_deep_fold(
                data,
                fold,
                config,
                fold_dir_of(run_dir, fold),
                pretrained,
                device=device,
                progress=progress,
            )
            _log_fold_done(outcomes[fold.index])
    else:
        _run_in_processes(
            data, pending, config, run_dir, pretrained, device, progress, workers, threads
        )
        for fold in pending:
            outcomes[fold.index] = _read_trained(data, fold, run_dir)
    return [outcomes[f.index] for f in folds]


def _completed_and_pending(
    data: CVData, folds: list[Fold], run_dir: Path
) -> tuple[dict[int, FoldOutcome], list[Fold]]:
    """Folds finished by an earlier run (read back), and the folds still to train."""
    completed, pending = {}, []
    for fold in folds:
        outcome = load_fold(fold_dir_of(run_dir, fold), data, fold)
        if outcome is None:
            pending.append(fold)
        else:
            logger.info(
                "fold %d: already complete, read from %s", fold.index, fold_dir_of(run_dir, fold)
            )
            completed[fold.index] = outcome
    return completed, pending


def _read_trained(data: CVData, fold: Fold, run_dir: Path) -> FoldOutcome:
    """A fold just trained (here or in a worker process), read back from its folder."""
    outcome = load_fold(fold_dir_of(run_dir, fold), data, fold, resumed=False)
    if outcome is None:
        raise RuntimeError(f"fold {fold.index} finished without writing its results")
    return outcome


def _run_folds_distributed(
    data: CVData,
    folds: list[Fold],
    config: TrainConfig,
    run_dir: Path,
    pretrained: bool | str,
    *,
    device: torch.device,
    progress: bool,
    dist: Ranks,
) -> list[FoldOutcome]:
    completed: dict[int, FoldOutcome] = {}  # filled on rank 0 only

    def pending_on_main() -> list[int]:
        done, pending = _completed_and_pending(data, folds, run_dir)
        completed.update(done)
        return [fold.index for fold in pending]

    pending = set(dist.on_main(pending_on_main))
    for fold in folds:
        if fold.index in pending:
            outcome = run_deep_fold(
                data,
                fold,
                config,
                fold_dir_of(run_dir, fold),
                pretrained,
                device=device,
                progress=progress,
                dist=dist,
            )
            if dist.is_main:
                _log_fold_done(outcome)
    if not dist.is_main:
        return []
    return [completed.get(f.index) or _read_trained(data, f, run_dir) for f in folds]


def _log_fold_done(outcome: FoldOutcome) -> None:
    logger.info(
        "fold %d done in %.0f s (best epoch %d, %.0f training samples/s)",
        outcome.fold,
        outcome.seconds,
        outcome.best_epoch,
        outcome.samples_per_s,
    )


# --- folds in worker processes ---------------------------------------------------------------
_WORKER: dict = {}


class _Redispatch(logging.Handler):
    """Hands a worker's log record to the parent's logger of the same name."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


def _init_worker(data, config, pretrained, device, progress, log_queue) -> None:
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(log_queue)]
    root.setLevel(logging.INFO)
    if data.windows_path is not None:  # handed over without its windows: map the file here
        data = dataclasses.replace(data, waveforms=map_windows(data.windows_path))
    _WORKER.update(
        data=data, config=config, pretrained=pretrained, device=device, progress=progress
    )


def _train_in_worker(fold: Fold, fold_dir: Path, threads: int, position: int) -> int:
    torch.set_num_threads(threads)
    w = _WORKER
    outcome = run_deep_fold(
        w["data"],
        fold,
        w["config"],
        fold_dir,
        w["pretrained"],
        device=w["device"],
        progress=w["progress"],
        position=position,
    )
    _log_fold_done(outcome)
    return fold.index


def _run_in_processes(
    data, pending, config, run_dir, pretrained, device, progress, workers, threads
):
    import concurrent.futures
    import logging.handlers

    import torch.multiprocessing as tmp

    context = tmp.get_context("spawn")
    log_queue = context.Queue()
    listener = logging.handlers.QueueListener(log_queue, _Redispatch())
    listener.start()
    if data.windows_path is None:
        data.waveforms.share_memory_()  # the workers get a handle to it, not a copy
    else:
        # pickling a mapped tensor would copy every window, and share_memory_ would copy them
        # into RAM: the workers get the file's path and map it themselves
        data = dataclasses.replace(data, waveforms=torch.empty(0))
    per_worker = max(1, threads // workers)
    logger.info(
        "training %d folds in %d processes, %d thread(s) each", len(pending), workers, per_worker
    )
    pool = None
    try:
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            # the worker asks to die with this process before it imports anything heavy
            initializer=initialize,
            initargs=(
                DieWithParent(),
                _init_worker,
                data,
                config,
                pretrained,
                device,
                progress,
                log_queue,
            ),  # fmt: skip
        )
        futures = [
            pool.submit(_train_in_worker, fold, fold_dir_of(run_dir, fold), per_worker, i % workers)
            for i, fold in enumerate(pending)
        ]
        for future in concurrent.futures.as_completed(futures):
            future.result()  # re-raises a worker's error here
        pool.shutdown()
    except BaseException:
        if pool is not None:
            _stop_pool(pool)
        raise
    finally:
        listener.stop()


def _stop_pool(pool) -> None:
    """Stop a process pool at once: folds not started are dropped, running ones killed (a fold
    writes its folder only when it is complete, so a rerun trains it again from the start).
    Waiting for them instead would keep a stopped or failed run alive for minutes."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
    for process in processes:
        process.kill()
    for process in processes:
        process.join(timeout=10)
    pool.shutdown(wait=True, cancel_futures=True)  # quick now: its manager sees them dead
