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
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from quake.deploy.ensemble import EventClassifier, weights_digest
from quake.run_folder import RunLog, default_run_dir, start_run_folder, versions
from quake.runtime import (
    SINGLE,
    OutputLock,
    Ranks,
    joined_ranks,
    write_text_atomic,
)
from quake.training.choice import choose_models
from quake.training.config import TrainConfig
from quake.training.cross_validation import (
    load_fold_model,
    predictions_frame,
    resolve_pretrained,
    run_baseline,
    run_deep_folds,
)
from quake.training.data import (
    load_data,
    log_data,
    make_folds,
    open_training_set,
    windows_follow_picks,
)
from quake.training.deployed import (
    context_on_deployed,
    deploy_summary,
    deployed_classifier,
    model_card,
    save_deployed,
)
from quake.training.loop import PretrainedResolver, probabilities_at, progress_enabled
from quake.training.results import (
    compute_metrics,
    macro_f1_summary,
    pretrained_summary,
    training_summary,
    write_figures,
    write_metrics_and_report,
    write_predictions,
)

#: Held by the training process that writes the run folder.
RUN_LOCK_FILE = "run.lock"

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict | None  # None on the ranks other than 0 under torchrun: they write nothing
    classifier_dir: Path


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
        log_data(config, follows_picks, data_summary, dropped)
        folds = dist.on_main(make_folds, data, config, run_dir)

        baseline = None
        if config.baseline.enabled and dist.is_main:
            baseline = _run_baseline(data, folds, config, threads, run_dir)
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
        models = [load_fold_model(run_dir / "folds" / f"fold_{f.index}") for f in folds]
        with_validation_probs(data, folds, outcomes, models, config, device)
        choices = choose_models(data, folds, outcomes, baseline, config.deploy)
        results = compute_metrics(data, folds, outcomes, baseline, choices)
        predictions, _ = write_predictions(data, folds, outcomes, choices, baseline, run_dir)
        model_id = f"{run_dir.name}-{weights_digest(models)[:8]}"
        pretrained = pretrained_summary(config, outcomes, resolver)
        classifier = EventClassifier(
            models,
            data.preprocess,
            data.class_names,
            model_id=model_id,
            info={
                "run": run_dir.name,
                "cv_macro_f1": results["hybridvit"]["aggregate"]["macro_f1"],
                "pretrained": pretrained.get("source"),
            },
        )
        context_models = None
        if config.context.enabled:
            results["context"], context_models = context_on_deployed(
                config, dataset, data, folds, choices, outcomes, baseline
            )
        deployed = deployed_classifier(choices, classifier, baseline, data, run_dir)
        deployed.card = model_card(dataset, data, results, choices.deployed.model)
        classifier_dir = save_deployed(deployed, context_models, run_dir / "model")

        metrics = {
            "run": run_dir.name,
            "model_id": model_id,
            **results,
            "data": data_summary,
            "dropped": dropped,
            "pretrained": pretrained,
            "deploy": deploy_summary(config, choices, len(models)),
            "card": deployed.card,
            "seed": config.seed,
            "training": training_summary(config, data, device, threads, workers, dist),
            "resumed_folds": [o.fold for o in outcomes if o.resumed],
            "versions": versions(),
        }
        metrics["explanations"] = write_figures(
            run_dir, config, dataset, data, folds, outcomes, results, baseline, predictions,
            choices,
        )  # fmt: skip
        timings["reporting_s"] = time.perf_counter() - t0
        timings["total_this_process_s"] = time.perf_counter() - t_start
        metrics["timings"] = timings
        write_metrics_and_report(run_dir, config, data, data_summary, metrics)
        logger.info(
            "done in %.0f s: macro-F1 %s; run folder %s",
            timings["total_this_process_s"],
            macro_f1_summary(metrics),
            run_dir,
        )
    return RunResult(run_dir=run_dir, metrics=metrics, classifier_dir=classifier_dir)


def _run_baseline(data, folds, config: TrainConfig, threads: int, run_dir: Path) -> dict:
    """The forest baseline on the same folds; its out-of-fold test predictions are written to
    ``baseline_predictions.csv``, and those on each fold's validation split (by the forest of
    its training part, what the deployed model is chosen on) to
    ``baseline_val_predictions.csv``."""
    baseline = run_baseline(data, folds, config, n_jobs=threads)
    for name, key, items in (
        ("baseline_predictions.csv", "probs", "test"),
        ("baseline_val_predictions.csv", "val_probs", "val"),
    ):
        frame = pd.concat(
            [
                predictions_frame(data, getattr(f, items), p, f.index)
                for f, p in zip(folds, baseline[key], strict=True)
            ]
        )
        write_text_atomic(run_dir / name, frame.to_csv(index=False))
    return baseline


def with_validation_probs(data, folds, outcomes, models, config: TrainConfig, device) -> None:
    """Fill in the validation probabilities of folds saved without them (a run resumed from
    folds trained before they were written), from each fold's saved model."""
    for fold, outcome, model in zip(folds, outcomes, models, strict=True):
        if outcome.val_probs is None:
            outcome.val_probs = probabilities_at(
                model,
                data.waveforms,
                fold.val,
                data.preprocess,
                batch_size=config.run.eval_batch_size,
                device=device,
            )
