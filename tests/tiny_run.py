"""The settings of the tiny training runs the tests make (one epoch, two folds, depth 1, no
pretrained weights, 20 trees): plumbing, not accuracy."""

from __future__ import annotations

from pathlib import Path

from quake.training import TrainConfig, load_config


def tiny_run_config(data: Path, out: Path, **extra) -> TrainConfig:
    """A validated config for a tiny run on ``data`` into ``out``; ``extra``: dotted keys that
    change or add to it."""
    overrides = {
        "data.path": str(data),
        "run.out": str(out),
        "run.quiet": True,
        "run.device": "cpu",
        "model.depth": 1,
        "model.pretrained": "none",
        "cv.folds": 2,
        "optim.epochs": 1,
        "optim.batch_size": 16,
        "baseline.n_estimators": 20,
        "run.parallel_folds": 1,
        **extra,
    }
    return load_config(overrides=overrides)
