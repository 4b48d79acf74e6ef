"""The random-forest baseline as a deployable classifier (``deploy.strategy: baseline``).

When the spectral-feature forest beats the HybridViT on a user's data (the report says so in
its first lines), the run can leave it in ``<run>/model/`` instead: the K fold forests, their
probabilities averaged, on the features of :func:`quake.models.forest.spectral_features`
computed from the same trimmed windows the HybridViT would get. ``quake classify``,
``quake.load`` and ``clf.classify(stream)`` use it like the HybridViT ensemble
(:mod:`quake.deploy.protocol`).

No pickle: each forest is stored as the arrays of its trees (children, split feature,
threshold, class fractions at each node) in one safetensors file, and predicted here with
numpy, all trees of a forest at once. ``predict_forest`` gives sklearn's ``predict_proba``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from quake.classes import ClassNames
from quake.data import PreprocessConfig
from quake.deploy.manifest import file_sha256, read_manifest, write_manifest
from quake.deploy.protocol import Classifier, check_windows
from quake.models.forest import spectral_features
from quake.probabilities import full_class_probabilities
from quake.runtime import staging_dir

logger = logging.getLogger(__name__)

FORMAT = "quake.BaselineClassifier"
FORESTS_FILE = "forests.safetensors"
_ARRAYS = ("left", "right", "feature", "threshold", "value", "roots")


def forest_arrays(forest, n_classes: int) -> dict[str, np.ndarray]:
    """A fitted sklearn ``RandomForestClassifier`` -> flat arrays of all its trees' nodes.

    Node indices are global (tree ``t``'s nodes follow tree ``t - 1``'s; ``roots`` holds each
    tree's first node); a leaf has ``left == -1``; ``value`` holds each node's class fractions
    over all ``n_classes`` (a class the forest never saw gets 0)."""
    lefts, rights, features, thresholds, values, roots = [], [], [], [], [], []
    offset = 0
    for estimator in forest.estimators_:
        tree = estimator.tree_
        leaf = tree.children_left == -1
        lefts.append(np.where(leaf, -1, tree.children_left + offset))
        rights.append(np.where(leaf, -1, tree.children_right + offset))
        features.append(np.where(leaf, 0, tree.feature))
        thresholds.append(tree.threshold)
        fractions = tree.value[:, 0, :] / tree.value[:, 0, :].sum(axis=1, keepdims=True)
        values.append(full_class_probabilities(fractions, forest.classes_, n_classes))
        roots.append(offset)
        offset += tree.node_count
    return {
        "left": np.concatenate(lefts).astype(np.int64),
        "right": np.concatenate(rights).astype(np.int64),
        "feature": np.concatenate(features).astype(np.int64),
        "threshold": np.concatenate(thresholds).astype(np.float64),
        "value": np.concatenate(values).astype(np.float64),
        "roots": np.asarray(roots, dtype=np.int64),
    }


def predict_forest(arrays: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """``(N, n_classes)`` class probabilities of a forest of :func:`forest_arrays`: every tree
    walks all rows at once, level by level, and the leaves' fractions are averaged."""
    x = np.asarray(features, dtype=np.float32).astype(np.float64)  # sklearn splits on float32
    rows = np.arange(len(x))
    node = np.repeat(arrays["roots"][:, None], len(x), axis=1)  # (trees, N)
    while True:
        inner = arrays["left"][node] >= 0
        if not inner.any():
            break
        go_left = x[rows[None, :], arrays["feature"][node]] <= arrays["threshold"][node]
        step = np.where(go_left, arrays["left"][node], arrays["right"][node])
        node = np.where(inner, step, node)
    return arrays["value"][node].mean(axis=0)


class BaselineClassifier(Classifier):
    """The K fold forests of a run on spectral features; probabilities averaged (module doc)."""

    FORMAT = FORMAT

    def __init__(
        self,
        forests: Sequence[dict[str, np.ndarray]],
        config: PreprocessConfig,
        class_names: Sequence[str],
        model_id: str,
        info: dict | None = None,
    ):
        if not forests:
            raise ValueError("BaselineClassifier needs at least one forest, got none")
        self.forests = list(forests)
        self.config = config
        self.class_names = ClassNames(class_names)
        self.model_id = model_id
        self.info = info or {}

    def predict_proba(self, waveforms: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """``(B, C)`` probabilities of trimmed ``(B, 3, window_samples)`` Z, N, E windows."""
        windows = check_windows(waveforms, self.config.window_samples)
        features = spectral_features(windows, self.config.sampling_rate_hz)
        return np.mean([predict_forest(f, features) for f in self.forests], axis=0)

    def save(self, directory: str | os.PathLike) -> Path:
        """``classifier.json`` + ``forests.safetensors``, built beside and renamed into place."""
        directory = Path(directory)
        staging = staging_dir(directory)
        tensors = {
            f"forest_{k}.{name}": np.ascontiguousarray(forest[name])
            for k, forest in enumerate(self.forests)
            for name in _ARRAYS
        }
        save_file(tensors, str(staging / FORESTS_FILE))
        self.save_context(staging)
        manifest = {
            "format": FORMAT,
            "model_id": self.model_id,
            "forests_sha256": file_sha256(staging / FORESTS_FILE),
            "n_forests": len(self.forests),
            "class_names": self.class_names.to_list(),
            "preprocess": self.config.to_dict(),
            "combine": "mean of the fold forests' probabilities",
            "info": self.info,
        }
        return write_manifest(staging, manifest, directory)

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str = "cpu") -> BaselineClassifier:
        """The forests saved in ``folder`` (they run on the CPU whatever ``device`` says)."""
        folder = Path(folder)
        manifest = read_manifest(folder, FORMAT)
        path = folder / FORESTS_FILE
        if not path.is_file() or file_sha256(path) != manifest.get("forests_sha256"):
            raise ValueError(
                f"{str(path)!r} is missing or differs from the forests saved with model "
                f"{manifest.get('model_id')!r}; expected the file written with it"
            )
        tensors = load_file(str(path))
        forests = [
            {name: tensors[f"forest_{k}.{name}"] for name in _ARRAYS}
            for k in range(int(manifest["n_forests"]))
        ]
        classifier = cls(
            forests,
            PreprocessConfig.from_dict(manifest["preprocess"]),
            manifest["class_names"],
            model_id=manifest["model_id"],
            info=manifest.get("info", {}),
        )
        classifier.load_context(folder)
        return classifier

    def __repr__(self) -> str:
        return (
            f"BaselineClassifier({self.model_id!r}, {len(self.forests)} forest(s), "
            f"classes={self.class_names.to_list()})"
        )
