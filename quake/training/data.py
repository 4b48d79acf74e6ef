"""A training run's data: the labelled set opened and checked before a run folder exists, the
windows read once (cached for the folds), the per-trace quality table, and the grouped folds."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from quake.data import WaveformDataAdapter, WaveformDataset, open_dataset, synthetic
from quake.data.adapter import WINDOW_COLUMN
from quake.data.onsets import (
    covering_command,
    covering_window,
    needs_survey,
    several_windows_command,
    survey_onsets,
)
from quake.runtime import (
    SINGLE,
    Ranks,
    write_text_atomic,
)
from quake.training.config import TrainConfig
from quake.training.cross_validation import (
    CVData,
    pre_event_samples,
)
from quake.training.shortcuts import find_shortcuts
from quake.training.splits import (
    SPLIT_COLUMN,
    Fold,
    check_disjoint_groups,
    check_split_values,
    cv_folds,
)
from quake.training.window_cache import map_windows, place_windows

logger = logging.getLogger(__name__)


#: The run's list of skipped traces and of traces used with a quality flag.
TRACE_QUALITY_FILE = "trace_quality.csv"


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
        first_windows=meta[WINDOW_COLUMN].to_numpy() == 0 if WINDOW_COLUMN in meta else None,
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
        # a class told apart by its sampling rate or components (quake.training.shortcuts)
        "shortcuts": find_shortcuts(
            meta, labels, class_names.to_list(), preprocess.sampling_rate_hz
        ),
    }
    if dist.is_main and preprocess.anchor == "p_arrival":
        survey = survey_onsets(dataset, preprocess, seed=config.seed)
        if survey is not None:
            covering = covering_window(survey, preprocess)
            summary["onset_survey"] = {
                **survey.to_dict(),
                "text": survey.describe(),
                "covering_window": covering,
            }
            logger.info("no P picks, windows follow origin times: %s", survey.describe())
            if covering:
                logger.warning(
                    "most signals outlast the window (90 %% end by %.0f s after the origin "
                    "time): a window that covers them is %s (the forest reads it in stretches); "
                    "or cut several per recording: %s (on surface events the covering window "
                    "measured better: docs/preprocessing.md)",
                    covering["signal_end_p90_s"],
                    covering_command(covering),
                    several_windows_command(covering),
                )
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


def augment_summary(config: TrainConfig) -> str:
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


def windows_follow_picks(config: TrainConfig, dataset: WaveformDataset) -> bool:
    """Whether the windows start at P picks (most traces carry one and the anchor is the P
    arrival) rather than at origin times: what the augmentation defaults depend on."""
    anchor = config.data.preprocess_config().anchor
    return anchor == "p_arrival" and not needs_survey(dataset.metadata)


def log_data(config: TrainConfig, follows_picks: bool, data_summary: dict, dropped: dict) -> None:
    """Log where the windows start, the augmentation, and what the data hold and dropped."""
    logger.info(
        "windows follow %s: augmentation %s",
        "P picks" if follows_picks else "origin times",
        augment_summary(config),
    )
    logger.info(
        "data: %d traces, %d events, classes %s, input %s; dropped %s",
        data_summary["n_traces"],
        data_summary["n_events"],
        data_summary["class_counts"],
        data_summary["input_shape"],
        dropped or "none",
    )
