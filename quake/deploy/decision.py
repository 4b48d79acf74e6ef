"""A model's decision thresholds, saved beside it (``decision.json``): the class of a window or
an event is the largest ``p_c / t_c`` (:func:`quake.probabilities.decide`), ``t`` chosen on the
training run's validation data (:mod:`quake.training.choice`). A model saved without the file
decides by the most probable class."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from quake.runtime import read_json, write_text_atomic

DECISION_FILE = "decision.json"


def write_decision(
    folder: str | os.PathLike, thresholds: Sequence[float], class_names: Sequence[str]
) -> Path:
    path = Path(folder) / DECISION_FILE
    body = {
        "rule": "the class with the largest probability / threshold",
        "thresholds": {name: float(t) for name, t in zip(class_names, thresholds, strict=True)},
    }
    write_text_atomic(path, json.dumps(body, indent=1) + "\n")
    return path


def read_decision(folder: str | os.PathLike, class_names: Sequence[str]) -> np.ndarray | None:
    """The thresholds saved beside a model, in ``class_names`` order, or None without a file;
    ValueError naming the file when its classes are not the model's or a value is not > 0."""
    path = Path(folder) / DECISION_FILE
    if not path.is_file():
        return None
    saved = read_json(path, "the decision.json of a quake model").get("thresholds") or {}
    if sorted(saved) != sorted(class_names):
        raise ValueError(
            f"{str(path)!r} has thresholds for {sorted(saved)}; expected one per class of the "
            f"model {sorted(class_names)}"
        )
    thresholds = np.array([saved[name] for name in class_names], dtype=np.float64)
    if not np.all(np.isfinite(thresholds)) or thresholds.min() <= 0:
        raise ValueError(
            f"{str(path)!r} holds thresholds {thresholds.tolist()}; expected positive numbers"
        )
    return thresholds
