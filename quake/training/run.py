"""A cross-validated training run, end to end, in one run folder.

``train(config)`` reads the data once, splits it into grouped folds, runs the spectral baseline
and the deep model on the same folds, writes metrics, plots, the report and the deployable
:class:`~quake.deploy.ensemble.EventClassifier`. The run folder records everything needed to trust and
repeat the numbers (resolved config, fold indices and seeds, versions, drop counts) and makes the
run resumable: rerunning with the same ``--out`` skips finished folds and refuses, with the
differing keys named, when the resolved config changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from quake.data import WaveformDataAdapter, WaveformDataset, open_dataset, synthetic
from quake.data.onsets import needs_survey, survey_onsets
from quake.deploy.combined import HYBRID_WEIGHT, CombinedClassifier, combine_parts
from quake.deploy.ensemble import EventClassifier, weights_digest
from quake.deploy.forest import BaselineClassifier, forest_arrays, forest_graphs
from quake.models.context import event_table
from quake.run_folder import RunLog, default_run_dir, start_run_folder, versions
from quake.runtime import (
    SINGLE,
    OutputLock,
    Ranks,
    joined_ranks,
    resolve_precision,
    write_text_atomic,
)
from quake.training import metrics as M
from quake.training import report, report_figures
from quake.training.config import TrainConfig
from quake.training.context import cross_validate_context
from quake.training.cross_validation import (
    CVData,
    FoldOutcome,
    load_fold_model,
    pre_event_samples,
    predictions_frame,
    probs_from_frame,
    resolve_pretrained,
    run_baseline,
    run_deep_folds,
)
from quake.training.loop import PretrainedResolver, progress_enabled
from quake.training.splits import (
    SPLIT_COLUMN,
    Fold,
    check_disjoint_groups,
    check_split_values,
    cv_folds,
)
from quake.training.window_cache import map_windows, place_windows

#: The run's list of skipped traces and of traces used with a quality flag.
TRACE_QUALITY_FILE = "trace_quality.csv"
#: Held by the training process that writes the run folder.
RUN_LOCK_FILE = "run.lock"

logger = logging.getLogger(__name__)

DEPLOY_NOTE = (
    "the ensemble of the {k} fold models, probabilities averaged. Why an ensemble rather than a "
    "refit on all data: it costs no extra training; every member chose its own checkpoint on its "
    "own grouped validation split, so no epoch count has to be carried over to a refit on more "
    "data, where it would no longer be validated; and averaging {k} models lowers the variance "
    "of the predictions. The cross-validated figures are those of single fold models, so they "
    "are, if anything, a conservative estimate for the ensemble"
)


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict | None  # None on the ranks other than 0 under torchrun: they write nothing
    classifier_dir: Path


def save_deployed(classifier, context_models, target: Path) -> Path:
    """``model/`` in one step: the deployed classifier and, with catalog context, its
    ``context.json`` appear together or not at all."""
    classifier.context_models = context_models
    return classifier.save(target)


def fold_workers(
    config: TrainConfig, device: torch.device, threads: int, dist: Ranks = SINGLE
) -> int:
    """How many folds train at once: one on a GPU or under torchrun (the ranks share each
    fold); on CPU ``run.parallel_folds``, by default
    one per core, plus one when the folds do not divide evenly over the cores (5 folds on 2
    cores: 3 workers finish in the time of 2.5 folds, 2 workers would need 3)."""
    if device.type != "cpu" or dist.enabled:
        return 1
    if config.run.parallel_folds is not None:
        return config.run.parallel_folds
    folds = config.cv.folds
    return max(1, min(folds, threads + (1 if folds % threads else 0)))


HYBRID_VIT_DIR = "model_hybridvit"
#: What ``model/`` holds under each ``deploy.strategy`` (metrics.json and report.md).
DEPLOY_NOTES = {
    "ensemble": DEPLOY_NOTE,
    "combined": "the HybridViT and the baseline, combined per window by the normalised "
    "geometric mean of their probabilities, the HybridViT's share of the vote {w:g} "
    "(deploy.hybrid_weight; quake.deploy.combined). "
    "HybridViT part (hybridvit/): "
    + DEPLOY_NOTE
    + ". Baseline part (baseline/): the {k} fold random forests, probabilities averaged",
    "baseline": "the {k} fold random forests on spectral features, probabilities averaged "
    "(quake.deploy.forest); the HybridViT ensemble is kept in {hybrid}/",
}


def baseline_classifier(baseline: dict, data: CVData, run_dir: Path):
    """The fold forests of the baseline as a deployable BaselineClassifier, with their ONNX
    graphs (converted here, while the fitted sklearn forests exist)."""
    forests = [forest_arrays(f, data.n_classes) for f in baseline["forests"]]
    digest = hashlib.sha256()
    for forest in forests:
        for name in sorted(forest):
            digest.update(forest[name].tobytes())
    return BaselineClassifier(
        forests,
        data.preprocess,
        data.class_names,
        model_id=f"{run_dir.name}-rf-{digest.hexdigest()[:8]}",
        info={"run": run_dir.name, "model": baseline["model"]},
        graphs=forest_graphs(baseline["forests"]),
    )


def open_training_set(config: TrainConfig, dist: Ranks = SINGLE) -> WaveformDataset:
    """The labelled set ``config.data`` names, opened (metadata and labels, no waveform read):
    a wrong path, an unknown format or a set without two labelled classes fails here, before
    a run folder exists."""
    if config.data.path is None:
        path = dist.on_main(synthetic.default_dataset_path)  # generated once, by rank 0
    else:
        path = Path(config.data.path).expanduser()
        if not path.exists():
            raise ValueError(f"data.path {str(path)!r} does not exist; expected a dataset folder")
    labels = config.data.labels()
    dataset = open_dataset(path, config.data.preprocess_config(), labels)
    classes = [] if dataset.class_names is None else list(dataset.class_names)
    if len(classes) < 2:
        found = f"only the class {classes}" if classes else f"no {labels.column!r} labels"
        raise ValueError(
            f"{str(path)!r} has {found}; expected a labelled set with at least two classes "
            "(data.label_column names the column of the labels, data.label_map maps the set's "
            "own names to class names)"
        )
    if config.cv.strategy == "predefined":  # a missing or bad split column fails before the run
        column = dataset.metadata.get(SPLIT_COLUMN)
        check_split_values(None if column is None else column.to_numpy(dtype=object), str(path))
    return dataset


def load_data(
    config: TrainConfig,
    dataset: WaveformDataset,
    progress: bool,
    dist: Ranks = SINGLE,
    run_dir: Path | None = None,
) -> tuple[CVData, dict, dict]:
    """Check every trace of ``dataset`` (:func:`open_training_set`) once, and hold the kept
    windows in one tensor: in memory, or (``run.window_cache`` disk) memory-mapped from
    ``<run_dir>/windows.npy``, written by rank 0 alone and opened by every rank."""
    preprocess = config.data.preprocess_config()
    path = dataset.path
    adapter = WaveformDataAdapter(dataset, config=preprocess, progress=progress)
    if len(adapter) == 0:
        raise ValueError(f"no usable trace in {str(path)!r}: dropped {adapter.drop_counts()}")
    if run_dir is not None and dist.is_main:
        write_trace_quality(adapter, run_dir / TRACE_QUALITY_FILE)
    windows_path = dist.on_main(
        place_windows, adapter, config, run_dir, progress, dist.local_world_size
    )
    if windows_path is None:
        waveforms = torch.from_numpy(
            np.ascontiguousarray(adapter.load_waveforms(progress=progress))
        )
    else:
        if not windows_path.is_file():
            raise ValueError(
                f"rank {dist.rank} cannot see the window cache {str(windows_path)!r} that rank 0 "
                "wrote; expected the run folder on a file system all ranks share, or "
                "run.window_cache=memory"
            )
        waveforms = map_windows(windows_path)
    meta = adapter.metadata
    if "source_id" not in meta.columns:
        raise ValueError(f"{str(path)!r} has no source_id column; folds must be grouped by event")
    class_names = adapter.class_names
    labels = np.asarray(adapter.labels, dtype=np.int64)
    present = np.bincount(labels, minlength=len(class_names))
    if (present > 0).sum() < 2:
        raise ValueError(
            f"training needs at least two classes with traces, got counts "
            f"{dict(zip(class_names, present.tolist(), strict=True))}"
        )
    data = CVData(
        waveforms=waveforms,
        labels=labels,
        class_names=class_names,
        trace_names=meta["trace_name"].astype(str).to_numpy(),
        source_ids=meta["source_id"].astype(str).to_numpy(),
        preprocess=preprocess,
        pre_event_samples=pre_event_samples(preprocess),
        windows_path=windows_path,
        splits=meta[SPLIT_COLUMN].to_numpy(dtype=object) if SPLIT_COLUMN in meta else None,
    )
    events = pd.DataFrame({"source_id": data.source_ids, "label": labels})
    traces_per_event = events.groupby("source_id").size()
    summary = {
        "path": str(path),
        "n_traces": int(len(labels)),
        "n_events": int(events["source_id"].nunique()),
        "class_counts": {c: int(n) for c, n in zip(class_names, present, strict=True)},
        "events_per_class": {
            c: int(events.loc[events["label"] == i, "source_id"].nunique())
            for i, c in enumerate(class_names)
        },
        "max_traces_per_event": int(traces_per_event.max()),
        "n_padded": int(meta["trace_padded"].sum()) if "trace_padded" in meta else 0,
        "quality_counts": dict(adapter.quality_counts.most_common()),
        "input_shape": list(preprocess.spectrogram_shape),
        "window_samples": preprocess.window_samples,
        "preprocess": preprocess.to_dict(),
    }
    if dist.is_main and preprocess.anchor == "p_arrival":
        survey = survey_onsets(dataset, preprocess, seed=config.seed)
        if survey is not None:
            summary["onset_survey"] = {**survey.to_dict(), "text": survey.describe()}
            logger.info("no P picks, windows follow origin times: %s", survey.describe())
    return data, summary, adapter.drop_counts()


def write_trace_quality(adapter: WaveformDataAdapter, path: Path) -> None:
    """``trace_quality.csv``: every trace that was skipped (with its reason) or used with a
    quality flag (with what was found and done); clean traces are not listed."""
    skipped = pd.DataFrame(
        [
            {
                "trace_name": item,
                "status": "skipped",
                "reason": reason.split(":", 1)[0],
                "detail": reason.split(":", 1)[1].strip() if ":" in reason else "",
            }
            for item, reason in adapter.dropped
        ],
        columns=["trace_name", "status", "reason", "detail"],
    )
    meta = adapter.metadata
    quality = meta["trace_quality"].astype(str) if "trace_quality" in meta else pd.Series(dtype=str)
    flagged = meta.loc[quality != "", ["trace_name"]].assign(
        status="used", reason="", detail=quality[quality != ""]
    )
    write_text_atomic(path, pd.concat([skipped, flagged]).to_csv(index=False))


def make_folds(data: CVData, config: TrainConfig, run_dir: Path) -> list[Fold]:
    """The folds of cv.strategy; saved on first use and checked against the saved ones on resume."""
    folds = cv_folds(
        config.cv.strategy,
        data.labels,
        data.source_ids,
        splits=data.splits,
        n_folds=config.cv.folds,
        val_fraction=config.cv.val_fraction,
        train_fraction=config.cv.train_fraction,
        seed=config.seed,
        class_names=data.class_names.to_list(),
    )
    path = run_dir / "fold_indices.json"
    payload = {
        "strategy": config.cv.strategy,
        "seed": config.seed,
        "n_folds": len(folds),
        "val_fraction": config.cv.val_fraction,
        "train_fraction": config.cv.train_fraction,
        "group_column": "source_id",
        "indices_refer_to": "items.csv",
        "folds": [
            {
                **f.to_dict(),
                "seed": config.seed * 1000 + f.index,
                "test_source_ids": sorted(set(data.source_ids[f.test])),
            }
            for f in folds
        ],
    }
    if path.is_file():
        saved = json.loads(path.read_text())
        saved_folds = [Fold.from_dict(f) for f in saved["folds"]]
        same = len(saved_folds) == len(folds) and all(
            np.array_equal(a.train, b.train)
            and np.array_equal(a.val, b.val)
            and np.array_equal(a.test, b.test)
            for a, b in zip(saved_folds, folds, strict=True)
        )
        if not same:
            raise ValueError(
                f"the folds computed now differ from {str(path)!r}: the data changed since the "
                "run started; use a new --out folder"
            )
    else:
        write_text_atomic(path, json.dumps(payload) + "\n")
    check_disjoint_groups(folds, data.source_ids)
    items = pd.DataFrame(
        {
            "index": np.arange(len(data.labels)),
            "trace_name": data.trace_names,
            "source_id": data.source_ids,
            "y_true": data.labels,
            "true_class": data.class_names.decode(data.labels),
        }
    )
    write_text_atomic(run_dir / "items.csv", items.to_csv(index=False))
    return folds


def _fold_metrics(
    y: np.ndarray, probs: np.ndarray, groups: np.ndarray, class_names
) -> tuple[dict, dict, int, int]:
    trace = M.classification_metrics(y, probs, class_names)
    event_probs, event_true, _, n_mixed = M.combine_by_event(probs, y, groups)
    event = M.classification_metrics(event_true, event_probs, class_names)
    return trace, event, n_mixed, len(event_true)


def _per_class_aggregate(per_fold: list[dict], class_names) -> dict:
    out = {}
    for c in class_names:
        out[c] = {
            key: {
                "mean": float(np.mean([f["per_class"][c][key] for f in per_fold])),
                "std": float(np.std([f["per_class"][c][key] for f in per_fold])),
            }
            for key in ("precision", "recall", "f1")
        }
        out[c]["support"] = int(sum(f["per_class"][c]["support"] for f in per_fold))
    return out


def compute_metrics(
    data: CVData,
    folds: list[Fold],
    outcomes: list[FoldOutcome],
    baseline: dict | None,
    hybrid_weight: float = HYBRID_WEIGHT,
) -> dict:
    names = data.class_names.to_list()
    fold_entries, event_entries, n_mixed_total, n_events_total = [], [], 0, 0
    for fold, outcome in zip(folds, outcomes, strict=True):
        y = data.labels[fold.test]
        trace, event, n_mixed, n_events = _fold_metrics(
            y, outcome.probs, data.source_ids[fold.test], names
        )
        n_mixed_total += n_mixed
        n_events_total += n_events
        fold_entries.append(
            {
                "fold": fold.index,
                "seed": outcome.seed,
                "n_train": int(len(fold.train)),
                "n_val": int(len(fold.val)),
                "n_test": int(len(fold.test)),
                "best_epoch": outcome.best_epoch,
                "epochs_run": len(outcome.history),
                "train_seconds": outcome.seconds,
                **trace,
            }
        )
        event_entries.append({"fold": fold.index, "n_events": n_events, **event})
    result = {
        "classes": names,
        "folds": fold_entries,
        "aggregate": M.aggregate(fold_entries),
        "per_class_aggregate": _per_class_aggregate(fold_entries, names),
        "confusion_matrix_total": np.sum(
            [f["confusion_matrix"] for f in fold_entries], axis=0
        ).tolist(),
        "event_level": {
            "rule": "mean of station log-probabilities per source_id, softmax-normalised",
            "n_events": n_events_total,
            "n_mixed_label_groups": n_mixed_total,
            "folds": event_entries,
            "aggregate": M.aggregate(event_entries),
        },
    }
    if baseline is not None:
        tests = [(f.index, data.labels[f.test], data.source_ids[f.test]) for f in folds]
        result["baseline"] = {
            "model": baseline["model"],
            "n_features": len(baseline["feature_names"]),
            "features": baseline["feature_names"],
            "fit_on": "each fold's training + validation traces; tested on the same test folds",
            **fold_level_metrics(tests, baseline["probs"], names),
        }
        combined = deployed_probs("combined", outcomes, baseline, hybrid_weight)
        result["combined"] = {
            "rule": "per window, normalised geometric mean of the HybridViT's and the "
            f"baseline's probabilities, the HybridViT's share of the vote {hybrid_weight:g} "
            "(deploy.hybrid_weight; quake.deploy.combined)",
            "hybrid_weight": hybrid_weight,
            **fold_level_metrics(tests, combined, names),
        }
    else:
        result["baseline"] = None
        result["combined"] = None
    return result


def deployed_probs(
    strategy: str,
    outcomes: list[FoldOutcome],
    baseline: dict | None,
    hybrid_weight: float = HYBRID_WEIGHT,
) -> list[np.ndarray]:
    """Per fold, the test probabilities of the model ``strategy`` deploys (``hybrid_weight``:
    the HybridViT's share of the vote in ``combined``)."""
    if strategy == "baseline":
        return list(baseline["probs"])
    if strategy == "combined":
        return [
            combine_parts(o.probs, b, hybrid_weight)
            for o, b in zip(outcomes, baseline["probs"], strict=True)
        ]
    return [o.probs for o in outcomes]


def combined_from_predictions(run_dir: Path, hybrid_weight: float) -> dict:
    """The ``combined`` block of a finished run's metrics.json at another ``hybrid_weight``,
    from the test predictions it wrote for the HybridViT and the baseline (nothing retrained):
    how the deployed combination would have scored on the same folds."""
    run_dir = Path(run_dir)
    ours = pd.read_csv(run_dir / "predictions.csv").sort_values("index")
    theirs = pd.read_csv(run_dir / "baseline_predictions.csv").sort_values("index")
    if not np.array_equal(ours["index"].to_numpy(), theirs["index"].to_numpy()):
        raise ValueError(
            f"{str(run_dir)!r}: the HybridViT and baseline predictions cover different items; "
            "expected the two prediction tables of one finished run"
        )
    names = json.loads((run_dir / "metrics.json").read_text())["classes"]
    tests, probs = [], []
    for fold, part in ours.groupby("fold", sort=True):
        rows = (ours["fold"] == fold).to_numpy()
        tests.append(
            (int(fold), part["y_true"].to_numpy(), part["source_id"].astype(str).to_numpy())
        )
        hybrid = probs_from_frame(part, names)
        probs.append(combine_parts(hybrid, probs_from_frame(theirs[rows], names), hybrid_weight))
    return fold_level_metrics(tests, probs, names)


def fold_level_metrics(
    tests: list[tuple[int, np.ndarray, np.ndarray]], probs: list[np.ndarray], class_names
) -> dict:
    """Per-fold trace and event metrics of one model's test probabilities and their mean ± std.

    ``tests``: per fold ``(fold index, labels, source ids)`` of its test items, ``probs`` the
    model's ``(n_test, C)`` probabilities of them. Used for the baseline and the combination
    (and by ``benchmarks/bench_recipe.py`` on the predictions a run wrote)."""
    trace_folds, event_folds = [], []
    for (index, y, groups), p in zip(tests, probs, strict=True):
        trace, event, _, n_events = _fold_metrics(y, p, groups, class_names)
        trace_folds.append({"fold": index, "n_test": int(len(y)), **trace})
        event_folds.append({"fold": index, "n_events": n_events, **event})
    return {
        "folds": trace_folds,
        "aggregate": M.aggregate(trace_folds),
        "event_level": {"folds": event_folds, "aggregate": M.aggregate(event_folds)},
    }


def _augment_summary(config: TrainConfig) -> str:
    a = config.augment
    if not a.enabled:
        return "off"
    parts = [
        f"time shift up to {a.time_shift_s} s (circular)",
        f"real noise p={a.noise_prob} at {a.noise_snr_db[0]}..{a.noise_snr_db[1]} dB SNR",
        f"channel dropout p={a.channel_dropout_prob}",
        f"time mask p={a.time_mask_prob} (<= {a.time_mask_max_frac:.0%})",
        f"frequency mask p={a.freq_mask_prob} (<= {a.freq_mask_max_frac:.0%})",
    ]
    if a.amplitude_scale:
        parts.insert(1, f"amplitude scale {a.amplitude_scale}")
    return "; ".join(parts)


def train(config: TrainConfig, *, progress: bool | None = None) -> RunResult:
    """Run the whole cross-validated training described by ``config``; returns the run folder.

    Under ``torchrun --nproc_per_node N`` the ranks train every fold together (see
    :class:`quake.runtime.Ranks`); rank 0 alone writes the run folder.
    """
    config.validate()
    with joined_ranks(config.run.device) as ranks:
        try:
            return _train(config, progress, ranks.device(config.run.device), ranks)
        finally:
            if ranks.is_main:  # the lock _start_run_dir took, when it got that far
                run_dir = Path(config.run.out) if config.run.out else None
                if run_dir is not None:
                    _run_lock(run_dir).__exit__()


def windows_follow_picks(config: TrainConfig, dataset: WaveformDataset) -> bool:
    """Whether the windows start at P picks (most traces carry one and the anchor is the P
    arrival) rather than at origin times: what the augmentation defaults depend on."""
    anchor = config.data.preprocess_config().anchor
    return anchor == "p_arrival" and not needs_survey(dataset.metadata)


def _run_lock(run_dir: Path) -> OutputLock:
    """One training process per run folder (``<run>/run.lock``)."""
    return OutputLock(run_dir / RUN_LOCK_FILE, f"run folder {str(run_dir)!r}")


def _start_run_dir(config: TrainConfig) -> tuple[Path, bool]:
    name = f"{config.model.backbone.lower()}-d{config.model.depth}"
    run_dir = Path(config.run.out) if config.run.out else default_run_dir(name)
    resumed = start_run_folder(run_dir, config, "quake run folder")
    if config.run.out is None:  # a new timestamped folder: remember it, to release its lock
        config.run.out = str(run_dir)
    _run_lock(run_dir).__enter__()  # released by train() when the run ends, however it ends
    return run_dir, resumed


def _train(
    config: TrainConfig, progress: bool | None, device: torch.device, dist: Ranks
) -> RunResult:
    t_start = time.perf_counter()
    dataset = open_training_set(config, dist)  # before the run folder: a typo leaves no folder
    run_dir, resumed = dist.on_main(_start_run_dir, config)
    follows_picks = windows_follow_picks(config, dataset)
    config = dataclasses.replace(config, augment=config.augment.resolved(follows_picks))
    progress = progress_enabled(config.run.quiet) if progress is None else progress
    progress = progress and dist.is_main
    cores = max(1, (os.cpu_count() or 1) // dist.local_world_size)
    threads = config.run.num_threads or cores
    torch.set_num_threads(threads)
    run_log = RunLog(run_dir / "train.log") if dist.is_main else contextlib.nullcontext()
    with run_log:
        logger.info(
            "%s run folder %s (device %s, %d threads%s)",
            "resuming" if resumed else "starting",
            run_dir,
            device,
            threads,
            f" in each of {dist.world_size} processes" if dist.enabled else "",
        )
        if dist.is_main:
            write_text_atomic(run_dir / "versions.json", json.dumps(versions(), indent=2) + "\n")
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        data, data_summary, dropped = load_data(config, dataset, progress, dist, run_dir=run_dir)
        timings["data_s"] = time.perf_counter() - t0
        data_summary["windows_follow_picks"] = follows_picks
        _log_data(config, follows_picks, data_summary, dropped)
        folds = dist.on_main(make_folds, data, config, run_dir)

        baseline = None
        baseline_predictions = None
        if config.baseline.enabled and dist.is_main:
            baseline, baseline_predictions = _run_baseline(data, folds, config, threads, run_dir)
            timings["baseline_s"] = baseline["seconds"]

        resolver = PretrainedResolver(config.model.pretrained)
        pretrained_arg = dist.on_main(resolve_pretrained, resolver, data, config)
        workers = fold_workers(config, device, threads, dist)
        t0 = time.perf_counter()
        outcomes = run_deep_folds(
            data,
            folds,
            config,
            run_dir,
            pretrained_arg,
            device=device,
            progress=progress,
            workers=workers,
            threads=threads,
            dist=dist,
        )
        if not dist.is_main:
            return RunResult(run_dir=run_dir, metrics=None, classifier_dir=run_dir / "model")
        timings["deep_folds_this_process_s"] = time.perf_counter() - t0
        timings["deep_training_s"] = float(sum(o.seconds for o in outcomes))
        for o in outcomes:
            timings[f"fold_{o.fold}_s"] = o.seconds

        t0 = time.perf_counter()
        results = compute_metrics(data, folds, outcomes, baseline, config.deploy.hybrid_weight)
        predictions = _write_predictions(data, folds, outcomes, run_dir)
        models = [load_fold_model(run_dir / "folds" / f"fold_{f.index}") for f in folds]
        model_id = f"{run_dir.name}-{weights_digest(models)[:8]}"
        pretrained = _pretrained_summary(config, outcomes, resolver)
        strategy = config.deploy.resolved(config.baseline.enabled)
        classifier = EventClassifier(
            models,
            data.preprocess,
            data.class_names,
            model_id=model_id,
            info={
                "run": run_dir.name,
                "strategy": strategy,
                "cv_macro_f1": results["aggregate"]["macro_f1"],
                "pretrained": pretrained.get("source"),
            },
        )
        context_models = None
        if config.context.enabled:
            results["context"], context_models = _cross_validate_context(
                config, dataset, data, folds, strategy, outcomes, baseline
            )
        deployed = _deployed_classifier(strategy, classifier, baseline, data, config, run_dir)
        classifier_dir = save_deployed(deployed, context_models, run_dir / "model")

        metrics = {
            "run": run_dir.name,
            "model_id": model_id,
            **results,
            "data": data_summary,
            "dropped": dropped,
            "pretrained": pretrained,
            "deploy": _deploy_summary(config, strategy, len(models)),
            "seed": config.seed,
            "training": _training_summary(config, data, device, threads, workers, dist),
            "resumed_folds": [o.fold for o in outcomes if o.resumed],
            "versions": versions(),
        }
        metrics["explanations"] = _write_figures(
            run_dir, config, dataset, data, folds, outcomes, results, baseline, predictions,
            baseline_predictions,
        )  # fmt: skip
        timings["reporting_s"] = time.perf_counter() - t0
        timings["total_this_process_s"] = time.perf_counter() - t_start
        metrics["timings"] = timings
        _write_metrics_and_report(run_dir, config, data, data_summary, metrics)
        logger.info(
            "done in %.0f s: macro-F1 %s; run folder %s",
            timings["total_this_process_s"],
            _macro_f1_summary(metrics),
            run_dir,
        )
    return RunResult(run_dir=run_dir, metrics=metrics, classifier_dir=classifier_dir)


def _log_data(config: TrainConfig, follows_picks: bool, data_summary: dict, dropped: dict) -> None:
    """Log where the windows start, the augmentation, and what the data hold and dropped."""
    logger.info(
        "windows follow %s: augmentation %s",
        "P picks" if follows_picks else "origin times",
        _augment_summary(config),
    )
    logger.info(
        "data: %d traces, %d events, classes %s, input %s; dropped %s",
        data_summary["n_traces"],
        data_summary["n_events"],
        data_summary["class_counts"],
        data_summary["input_shape"],
        dropped or "none",
    )


def _run_baseline(data, folds, config: TrainConfig, threads: int, run_dir: Path):
    """The forest baseline on the same folds, and its out-of-fold predictions, written to
    ``baseline_predictions.csv``."""
    baseline = run_baseline(data, folds, config, n_jobs=threads)
    baseline_predictions = pd.concat(
        [
            predictions_frame(data, f.test, p, f.index)
            for f, p in zip(folds, baseline["probs"], strict=True)
        ]
    )
    write_text_atomic(
        run_dir / "baseline_predictions.csv", baseline_predictions.to_csv(index=False)
    )
    return baseline, baseline_predictions


def _write_predictions(data, folds, outcomes, run_dir: Path) -> pd.DataFrame:
    """The deep folds' out-of-fold predictions, written to ``predictions.csv``."""
    all_frames = [
        predictions_frame(data, f.test, o.probs, f.index)
        for f, o in zip(folds, outcomes, strict=True)
    ]
    predictions = pd.concat(all_frames)
    write_text_atomic(run_dir / "predictions.csv", predictions.to_csv(index=False))
    return predictions


def _pretrained_summary(config: TrainConfig, outcomes, resolver: PretrainedResolver) -> dict:
    """What ``metrics.json`` says of the pretrained weights: asked for, used, per fold."""
    return {
        "requested": config.model.pretrained,
        **outcomes[0].pretrained_info,
        "note": resolver.status.get("note", "from the saved folds"),
        "per_fold_source": [o.pretrained_info.get("source") for o in outcomes],
    }


def _cross_validate_context(
    config: TrainConfig, dataset, data, folds, strategy: str, outcomes, baseline
):
    """The catalog-context model cross-validated on the deployed model's probabilities: its
    metrics and its per-fold models."""
    return cross_validate_context(
        event_table(
            report_figures.item_metadata(dataset.metadata, data.trace_names),
            data.source_ids,
        ),
        data.labels,
        data.source_ids,
        folds,
        deployed_probs(strategy, outcomes, baseline, config.deploy.hybrid_weight),
        data.class_names.to_list(),
        config.context.timezone,
    )


def _deployed_classifier(
    strategy: str, classifier: EventClassifier, baseline, data, config: TrainConfig, run_dir: Path
):
    """The classifier the strategy deploys (the HybridViT ensemble is kept beside a baseline)."""
    if strategy == "baseline":
        classifier.save(run_dir / HYBRID_VIT_DIR)  # kept, not deployed
        return baseline_classifier(baseline, data, run_dir)
    if strategy == "combined":
        forests = baseline_classifier(baseline, data, run_dir)
        return CombinedClassifier(
            classifier,
            forests,
            info={"run": run_dir.name, "strategy": "combined"},
            hybrid_weight=config.deploy.hybrid_weight,
        )
    return classifier


def _deploy_summary(config: TrainConfig, strategy: str, members: int) -> dict:
    """What ``metrics.json`` says of the deployed model and why it was chosen."""
    return {
        "strategy": strategy,
        "members": members,
        "folder": "model",
        "why": DEPLOY_NOTES[strategy].format(
            k=members, hybrid=HYBRID_VIT_DIR, w=config.deploy.hybrid_weight
        ),
        "catalog_context": config.context.enabled,
    }


def _training_summary(
    config: TrainConfig, data, device: torch.device, threads: int, workers: int, dist: Ranks
) -> dict:
    """What ``metrics.json`` says of how the folds were trained (device, processes, precision)."""
    return {
        "device": str(device),
        "threads": threads,
        "parallel_folds": workers,
        "processes": dist.world_size,
        "backend": "nccl" if device.type == "cuda" else "gloo" if dist.enabled else None,
        "precision": resolve_precision(config.optim.precision, device),
        "compile": config.run.compile,
        "window_cache": "memory" if data.windows_path is None else "disk",
    }


def _write_figures(
    run_dir: Path, config: TrainConfig, dataset, data, folds, outcomes, results: dict, baseline,
    predictions: pd.DataFrame, baseline_predictions: pd.DataFrame | None,
) -> dict:  # fmt: skip
    """Write the plots and the explanation figures; what ``metrics.json`` says of the latter."""
    plot_input = {
        "class_names": data.class_names.to_list(),
        "y_true": np.concatenate([data.labels[f.test] for f in folds]),
        "probs": np.concatenate([o.probs for o in outcomes]),
        "baseline_probs": None if baseline is None else np.concatenate(baseline["probs"]),
        "confusion_matrix": np.asarray(results["confusion_matrix_total"]),
        "histories": [o.history for o in outcomes],
        "best_epochs": [o.best_epoch for o in outcomes],
    }
    report.write_plots(run_dir, plot_input)
    return report_figures.write_explanations(
        run_dir,
        predictions,
        data.waveforms,
        data.labels,
        data.class_names.to_list(),
        data.preprocess,
        report_figures.item_metadata(dataset.metadata, data.trace_names),
        seed=config.seed,
        baseline_predictions=baseline_predictions,
    )


def _write_metrics_and_report(
    run_dir: Path, config: TrainConfig, data, data_summary: dict, metrics: dict
) -> None:
    """Write ``metrics.json`` and the readable ``report.md`` made from it."""
    write_text_atomic(run_dir / "metrics.json", json.dumps(_json_safe(metrics), indent=2) + "\n")
    extra = {
        "run_name": run_dir.name,
        "data_path": data_summary["path"],
        "backbone": config.model.backbone,
        "depth": config.model.depth,
        "fusion": config.model.fusion,
        "input_shape": tuple(data_summary["input_shape"]),
        "deploy_note": metrics["deploy"]["why"],
        "preprocess_summary": json.dumps(data.preprocess.to_dict()),
        "augment_summary": _augment_summary(config),
    }
    write_text_atomic(run_dir / "report.md", report.render_report(_json_safe(metrics), extra))


def _macro_f1_summary(metrics: dict) -> str:
    """``deployed (combined) 0.967 ± 0.009, HybridViT 0.956, baseline 0.956``: the model in
    ``model/`` first, so that the last line of a run names what was deployed."""

    def figure(block: dict) -> str:
        agg = block["aggregate"]["macro_f1"]
        return f"{agg['mean']:.3f} ± {agg['std']:.3f}"

    parts = {
        "HybridViT": metrics,
        **{k: metrics[k] for k in ("baseline", "combined") if metrics.get(k)},
    }
    strategy = metrics["deploy"]["strategy"]
    deployed = strategy if strategy in parts else "HybridViT"  # ensemble: the HybridViTs
    first = f"deployed ({strategy}) {figure(parts[deployed])}"
    rest = [f"{name} {figure(block)}" for name, block in parts.items() if name != deployed]
    return ", ".join([first, *rest])


def _json_safe(value):
    """NaN -> None, numpy scalars -> Python, recursively (metrics.json stays strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
