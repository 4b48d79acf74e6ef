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

Beside the arrays, each fold forest as an ONNX graph (``forest_<k>.onnx``, converted by
skl2onnx from the fitted sklearn forest at training time, when it exists; its SHA-256 in
``classifier.json``): what ``quake export`` ships. A folder saved without them (before they
existed, or whose conversion failed) still loads and classifies, but does not export.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType

from quake.classes import ClassNames
from quake.data import PreprocessConfig
from quake.deploy.manifest import (
    CLASSIFIER_FILE,
    check_digests,
    file_sha256,
    read_manifest,
    write_manifest,
)
from quake.deploy.protocol import Classifier, check_windows
from quake.models.forest import feature_names, feature_segments, spectral_features
from quake.probabilities import full_class_probabilities
from quake.runtime import staging_dir

logger = logging.getLogger(__name__)

FORMAT = "quake.BaselineClassifier"
FORESTS_FILE = "forests.safetensors"
_ARRAYS = ("left", "right", "feature", "threshold", "value", "roots")
#: The ONNX graph of fold ``k``'s forest in a BaselineClassifier folder (and in an export).
GRAPH_FILE = "forest_{k}.onnx"
GRAPH_INPUT = "features"
GRAPH_OUTPUT = "probabilities"
GRAPH_LEAVES = "decision_leaf"


@dataclass(frozen=True)
class ForestGraph:
    """One fold forest as an ONNX graph: float32 :func:`spectral_features` ``(batch, F)`` in
    :data:`GRAPH_INPUT` -> :data:`GRAPH_OUTPUT` ``(batch, len(classes))``, the probabilities of
    the class indices the forest was fitted on (a fold may miss a class), in that order, and
    :data:`GRAPH_LEAVES` ``(batch, trees)``, the leaf each tree reaches (sklearn's ``apply``).

    The probabilities are summed in float32 (and a two-class forest gives its first class as
    ``1 - p``), a few 1e-8 from sklearn's where a class is certain; the combination's log
    (eps 1e-6) makes that 1e-5. Mean leaf fractions in float64 (:func:`leaf_probabilities`)
    give sklearn's probabilities exactly."""

    model: bytes
    classes: tuple[int, ...]


def forest_graph(forest) -> ForestGraph:
    """A fitted sklearn ``RandomForestClassifier`` -> its :class:`ForestGraph`, by skl2onnx."""
    features = FloatTensorType([None, int(forest.n_features_in_)])
    model = to_onnx(
        forest,
        initial_types=[(GRAPH_INPUT, features)],
        # probabilities as one (batch, C) tensor, and the leaves reached
        options={type(forest): {"zipmap": False, "decision_leaf": True}},
    )
    return ForestGraph(model.SerializeToString(), tuple(int(c) for c in forest.classes_))


def leaf_probabilities(arrays: dict[str, np.ndarray], leaves: np.ndarray) -> np.ndarray:
    """``(N, n_classes)`` probabilities of a forest of :func:`forest_arrays` from the leaves
    its trees reach, ``(N, trees)`` tree-local node ids (a graph's :data:`GRAPH_LEAVES`)."""
    nodes = arrays["roots"][None, :] + np.asarray(leaves, dtype=np.int64)
    return arrays["value"][nodes.T].mean(axis=0)


def forest_graphs(forests: Sequence) -> list[ForestGraph] | None:
    """The :class:`ForestGraph` of each fitted fold forest, or None (logged) when the converter
    fails: a finished training run is not lost to it; the forests still deploy, only
    ``quake export`` will refuse them."""
    try:
        return [forest_graph(forest) for forest in forests]
    except Exception as exc:  # any converter failure: keep the run, say why export will refuse
        logger.warning(
            "the forests are saved without their ONNX graphs (skl2onnx: %s: %s)",
            type(exc).__name__,
            exc,
        )
        return None


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


def check_features_fit(
    folder: Path, manifest: dict, forests: Sequence[dict[str, np.ndarray]], config
) -> None:
    """ValueError naming the manifest when its preprocessing gives the forests other features
    than they were trained on: the features depend on the sampling rate and the window's
    length (its stretches), so an edited ``preprocess`` would make the trees read the wrong
    columns (or none)."""
    n_features = len(feature_names(config.sampling_rate_hz, feature_segments(config.window_s)))
    saved = manifest.get("n_features")
    used = max((int(f["feature"].max()) + 1 for f in forests if f["feature"].size), default=0)
    if (saved is not None and saved != n_features) or used > n_features:
        raise ValueError(
            f"{str(folder / CLASSIFIER_FILE)!r}: its preprocessing (sampling rate "
            f"{config.sampling_rate_hz:g} Hz, {config.window_s:g} s windows) gives {n_features} "
            f"spectral features; the forests were trained on "
            f"{saved if saved is not None else f'at least {used}'}; expected the preprocessing "
            "the model was saved with"
        )


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
        graphs: Sequence[ForestGraph] | None = None,
    ):
        if not forests:
            raise ValueError("BaselineClassifier needs at least one forest, got none")
        if graphs is not None and len(graphs) != len(forests):
            raise ValueError(
                f"got {len(graphs)} ONNX forest graph(s) for {len(forests)} forest(s); "
                "expected one per forest"
            )
        self.forests = list(forests)
        #: each forest's ONNX graph (module doc); None in folders saved without them
        self.graphs = list(graphs) if graphs is not None else None
        self.config = config
        self.class_names = ClassNames(class_names)
        self.model_id = model_id
        self.info = info or {}

    @property
    def segments(self) -> int:
        """The stretches each window's features describe (:func:`feature_segments`)."""
        return feature_segments(self.config.window_s)

    def predict_proba(self, waveforms: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """``(B, C)`` probabilities of trimmed ``(B, 3, window_samples)`` Z, N, E windows."""
        windows = check_windows(waveforms, self.config.window_samples)
        features = spectral_features(windows, self.config.sampling_rate_hz, segments=self.segments)
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
        graphs = self._save_graphs(staging)
        self.save_companions(staging)
        manifest = {
            "format": FORMAT,
            "model_id": self.model_id,
            "forests_sha256": file_sha256(staging / FORESTS_FILE),
            "n_forests": len(self.forests),
            "n_features": len(feature_names(self.config.sampling_rate_hz, self.segments)),
            **({"onnx": graphs} if graphs else {}),
            "class_names": self.class_names.to_list(),
            "preprocess": self.config.to_dict(),
            "combine": "mean of the fold forests' probabilities",
            "info": self.info,
        }
        return write_manifest(staging, manifest, directory)

    def _save_graphs(self, staging: Path) -> dict | None:
        """Write each forest's ONNX graph; what the manifest records of them."""
        if self.graphs is None:
            return None
        files = [GRAPH_FILE.format(k=k) for k in range(len(self.graphs))]
        for name, graph in zip(files, self.graphs, strict=True):
            (staging / name).write_bytes(graph.model)
        return {
            "files": files,
            "sha256": [file_sha256(staging / name) for name in files],
            "classes": [list(graph.classes) for graph in self.graphs],
            "input": f"{GRAPH_INPUT}: float32 (batch, features) of spectral_features",
            "output": f"{GRAPH_OUTPUT}: float32 (batch, len(classes)) for the classes listed",
        }

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str = "cpu") -> BaselineClassifier:
        """The forests saved in ``folder`` (they run on the CPU whatever ``device`` says)."""
        folder = Path(folder)
        manifest = read_manifest(folder, FORMAT)
        path = folder / FORESTS_FILE
        recorded = {path: manifest.get("forests_sha256")}
        check_digests(recorded, folder / CLASSIFIER_FILE, manifest.get("model_id"))
        tensors = load_file(str(path))
        forests = [
            {name: tensors[f"forest_{k}.{name}"] for name in _ARRAYS}
            for k in range(int(manifest["n_forests"]))
        ]
        config = PreprocessConfig.from_saved(manifest["preprocess"])
        check_features_fit(folder, manifest, forests, config)
        classifier = cls(
            forests,
            config,
            manifest["class_names"],
            model_id=manifest["model_id"],
            info=manifest.get("info", {}),
            graphs=_load_graphs(folder, manifest),
        )
        classifier.load_companions(folder)
        return classifier

    def __repr__(self) -> str:
        return (
            f"BaselineClassifier({self.model_id!r}, {len(self.forests)} forest(s), "
            f"classes={self.class_names.to_list()})"
        )


def _load_graphs(folder: Path, manifest: dict) -> list[ForestGraph] | None:
    """The ONNX graphs the manifest records, each checked against its SHA-256; None when the
    folder was saved without them."""
    recorded = manifest.get("onnx")
    if not recorded:
        return None
    paths = [folder / name for name in recorded["files"]]
    digests = dict(zip(paths, recorded["sha256"], strict=True))
    check_digests(digests, folder / CLASSIFIER_FILE, manifest.get("model_id"))
    return [
        ForestGraph(path.read_bytes(), tuple(int(c) for c in classes))
        for path, classes in zip(paths, recorded["classes"], strict=True)
    ]
