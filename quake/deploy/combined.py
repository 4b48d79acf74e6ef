"""The HybridViT ensemble and the random-forest baseline voting together
(``deploy.strategy: combined``, the default).

Each window goes through both: the K fold HybridViTs (spectrograms) and the K fold forests
(hand-made spectral and envelope features of the same trimmed window). Their two probability
vectors are combined by :func:`quake.probabilities.combine_models`, the normalised geometric
mean that also combines stations into events, the HybridViT voting with ``hybrid_weight`` and
the forests with the rest (``deploy.hybrid_weight``, default :data:`HYBRID_WEIGHT`, saved in
``classifier.json``; folders saved before it existed vote equally). The weight is a default chosen by measurement, not
fitted per run, so no validation split (small on small sets) can choose badly. Why combine:
on the real sets the two models err on different events, and the combination beat each of
them alone on the same folds (benchmarks/choosing-the-recipe.md).

Folder: ``classifier.json`` (format, class names, preprocessing, model id) with the two parts
in ``hybridvit/`` (an :class:`quake.deploy.ensemble.EventClassifier`) and ``baseline/`` (a
:class:`quake.deploy.forest.BaselineClassifier`), each verified on loading as usual.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from quake.deploy.ensemble import EventClassifier
from quake.deploy.forest import BaselineClassifier
from quake.deploy.manifest import CLASSIFIER_FILE, read_manifest, write_manifest
from quake.deploy.protocol import Classifier, check_windows
from quake.probabilities import combine_models
from quake.runtime import staging_dir

FORMAT = "quake.CombinedClassifier"
#: The HybridViT's share of the vote when a run or a user does not say (``deploy.hybrid_weight``):
#: chosen by measurement on the shared sets (benchmarks/combine.md).
HYBRID_WEIGHT = 0.4
#: The HybridViT's shares of the vote a training run chooses among on its validation data
#: (``deploy.strategy: auto``; 0: the forests alone, 1: the HybridViT alone).
HYBRID_WEIGHTS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
HYBRID_DIR = "hybridvit"
BASELINE_DIR = "baseline"


def combine_parts(
    hybrid_probs: np.ndarray, baseline_probs: np.ndarray, hybrid_weight: float
) -> np.ndarray:
    """The combined model's ``(N, C)`` probabilities from its two parts' for the same windows:
    the HybridViT votes with ``hybrid_weight``, the forests with the rest. Training's metrics,
    the deployed model and ``benchmarks/bench_combine.py`` all combine through this."""
    return combine_models([hybrid_probs, baseline_probs], [hybrid_weight, 1.0 - hybrid_weight])


def check_part_agrees(folder: Path, manifest: dict, part: Classifier, name: str) -> None:
    """ValueError naming both manifests when the top-level ``classifier.json`` and a part's
    disagree on the classes or the preprocessing: the file would misstate what runs."""
    for key, theirs in (
        ("class_names", part.class_names.to_list()),
        ("preprocess", part.config.to_dict()),
    ):
        if manifest.get(key) != json.loads(json.dumps(theirs)):  # as saved: tuples are lists
            raise ValueError(
                f"{str(folder / CLASSIFIER_FILE)!r} and {str(folder / name / CLASSIFIER_FILE)!r} "
                f"disagree on {key}; expected the manifests the model was saved with"
            )


class CombinedClassifier(Classifier):
    """An :class:`EventClassifier` and a :class:`BaselineClassifier` of one run, combined per
    window (module doc). Same interface as either: ``predict_proba``, ``classify``,
    ``class_names``, ``config``, ``model_id``."""

    FORMAT = FORMAT

    def __init__(
        self,
        hybrid: EventClassifier,
        baseline: BaselineClassifier,
        model_id: str | None = None,
        info: dict | None = None,
        hybrid_weight: float = HYBRID_WEIGHT,
    ):
        if hybrid.class_names != baseline.class_names:
            raise ValueError(
                f"the HybridViT has classes {hybrid.class_names.to_list()} and the baseline "
                f"{baseline.class_names.to_list()}; expected the same classes"
            )
        if hybrid.config.to_dict() != baseline.config.to_dict():
            raise ValueError(
                "the HybridViT and the baseline were saved with different preprocessing; "
                "expected the two parts of one training run"
            )
        if not 0.0 <= hybrid_weight <= 1.0:
            raise ValueError(
                f"hybrid_weight must be from 0 (the forests alone) to 1 (the HybridViT alone), "
                f"got {hybrid_weight!r}"
            )
        self.hybrid = hybrid
        self.hybrid_weight = float(hybrid_weight)
        self.baseline = baseline
        self.class_names = hybrid.class_names
        self.config = hybrid.config
        self.model_id = model_id or f"{hybrid.model_id}+{baseline.model_id}"
        self.info = dict(info or {})

    @property
    def device(self):
        """Where the HybridViT part runs (the forests run on the CPU)."""
        return self.hybrid.device

    @property
    def models(self) -> list:
        """The HybridViT members (what ``quake export`` would count)."""
        return self.hybrid.models

    def to(self, device) -> CombinedClassifier:
        self.hybrid.to(device)
        return self

    def predict_proba(self, waveforms: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """``(B, C)`` probabilities of trimmed ``(B, 3, window_samples)`` Z, N, E windows."""
        windows = check_windows(waveforms, self.config.window_samples)
        return combine_parts(
            self.hybrid.predict_proba(windows, batch_size=batch_size),
            self.baseline.predict_proba(windows, batch_size=batch_size),
            self.hybrid_weight,
        )

    uses_spectrograms = True

    def predict_proba_with(self, waveforms, spectrograms, batch_size: int = 128) -> np.ndarray:
        """:meth:`predict_proba`, the HybridViT part taking the ``spectrograms`` given."""
        windows = check_windows(waveforms, self.config.window_samples)
        return combine_parts(
            self.hybrid.predict_proba_with(windows, spectrograms, batch_size=batch_size),
            self.baseline.predict_proba(windows, batch_size=batch_size),
            self.hybrid_weight,
        )

    def save(self, directory: str | os.PathLike) -> Path:
        """The folder of the module doc, built beside and renamed into place."""
        directory = Path(directory)
        staging = staging_dir(directory)
        self.hybrid.save(staging / HYBRID_DIR)
        self.baseline.save(staging / BASELINE_DIR)
        self.save_companions(staging)
        manifest = {
            "format": FORMAT,
            "model_id": self.model_id,
            "class_names": self.class_names.to_list(),
            "preprocess": self.config.to_dict(),
            "parts": {"hybridvit": HYBRID_DIR, "baseline": BASELINE_DIR},
            "combine": "normalised geometric mean of the two parts' probabilities, weighted",
            "hybrid_weight": self.hybrid_weight,
            "info": self.info,
        }
        return write_manifest(staging, manifest, directory)

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str = "cpu") -> CombinedClassifier:
        folder = Path(folder)
        manifest = read_manifest(folder, FORMAT)
        hybrid = EventClassifier.load(folder / HYBRID_DIR, device=device)
        baseline = BaselineClassifier.load(folder / BASELINE_DIR)
        for part, name in ((hybrid, HYBRID_DIR), (baseline, BASELINE_DIR)):
            check_part_agrees(folder, manifest, part, name)
        classifier = cls(
            hybrid,
            baseline,
            model_id=manifest["model_id"],
            info=manifest.get("info"),
            hybrid_weight=manifest.get("hybrid_weight", 0.5),  # older folders: equal votes
        )
        classifier.load_companions(folder)
        return classifier

    def __repr__(self) -> str:
        return (
            f"CombinedClassifier({self.model_id!r}, {len(self.hybrid.models)} HybridViT(s) + "
            f"{len(self.baseline.forests)} forest(s), classes={self.class_names.to_list()})"
        )
