"""An ONNX export (``quake export``) as a deployable classifier, run with onnxruntime.

The export folder holds ``export.json`` and the graphs of the exported kind
(:mod:`quake.deploy.export` writes them): ``model.onnx`` for the HybridViT ensemble, the fold
forests' ``forest_<k>.onnx`` for the baseline, both for the combined model. This module reads
them: the sidecar, the graph's metadata, and probabilities. The forests take the spectral
features of :func:`quake.models.forest.spectral_features` (numpy and scipy, computed here
beside the graphs: the sidecar names the function, the rate and the stretches), and the
combined model's two parts are combined by :func:`quake.deploy.combined.combine_parts` with the
sidecar's weight: the same code as the Python classifiers, so the export gives their
probabilities.
onnxruntime is an optional dependency, imported when a graph runs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from quake.classes import ClassNames
from quake.data import PreprocessConfig
from quake.deploy.card import read_card
from quake.deploy.combined import combine_parts
from quake.deploy.decision import read_decision
from quake.deploy.forest import GRAPH_INPUT, GRAPH_LEAVES, leaf_probabilities
from quake.deploy.manifest import check_digests
from quake.deploy.protocol import Classifier, check_windows
from quake.models.forest import spectral_features
from quake.runtime import publish_staged, staging_dir

ONNX_FILE = "model.onnx"
SIDECAR_FILE = "export.json"
INPUT_NAME = "waveforms"
OUTPUT_NAME = "probabilities"
EXPORT_FORMAT = "quake.Export"
#: The forests' leaf class fractions in an export (``forest_<k>.value``, ``forest_<k>.roots``).
LEAF_VALUES_FILE = "forest_leaves.safetensors"
LEAF_ARRAYS = ("value", "roots")
#: What computes the forests' input, named in ``export.json`` (``features.function``).
FEATURES_FUNCTION = f"{spectral_features.__module__}.{spectral_features.__qualname__}"


#: ``metadata_props`` of ``model.onnx``: JSON ``class_names`` (output order) and ``preprocess``
#: (the PreprocessConfig), ``model_id``, ``quake_version``, and what ``input`` and ``output`` hold.
ONNX_METADATA_KEYS = ("class_names", "preprocess", "model_id", "quake_version", "input", "output")


def read_export(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """``export.json`` of an export folder (class names, preprocessing, files, parity)."""
    path = Path(directory) / SIDECAR_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} not found; expected a folder written by scripts/export.py"
        )
    sidecar = json.loads(path.read_text())
    if sidecar.get("format") != EXPORT_FORMAT:
        raise ValueError(
            f"{str(path)!r} has format {sidecar.get('format')!r}; expected {EXPORT_FORMAT!r}"
        )
    return sidecar


def read_onnx_metadata(onnx_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``metadata_props`` of an exported ``model.onnx`` (weights not loaded), with
    ``class_names`` and ``preprocess`` decoded from JSON."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    props: dict[str, Any] = {p.key: p.value for p in model.metadata_props}
    for key in ("class_names", "preprocess"):
        if key in props:
            props[key] = json.loads(props[key])
    return props


def onnx_predict_proba(
    onnx_path: str | os.PathLike[str], waveforms: np.ndarray, batch_size: int = 128
) -> np.ndarray:
    """Probabilities ``(B, C)`` from an exported graph, with onnxruntime on CPU."""
    session = _onnx_session(str(onnx_path))
    x = np.ascontiguousarray(waveforms, dtype=np.float32)
    out = [
        session.run([OUTPUT_NAME], {INPUT_NAME: x[start : start + batch_size]})[0]
        for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(out).astype(np.float64)


def forest_graph_proba(
    graph: str | os.PathLike[str] | bytes, features: np.ndarray, leaf_values: dict[str, np.ndarray]
) -> np.ndarray:
    """``(B, n_classes)`` probabilities of one forest graph (a file, or its bytes) on ``(B, F)``
    spectral features: the graph walks the trees, and the leaves' class fractions
    (``leaf_values``: ``value`` and ``roots`` of :func:`quake.deploy.forest.forest_arrays`) are
    averaged in float64, as sklearn does (:class:`quake.deploy.forest.ForestGraph`)."""
    session = _onnx_session(graph if isinstance(graph, bytes) else str(graph))
    x = np.ascontiguousarray(features, dtype=np.float32)
    leaves = session.run([GRAPH_LEAVES], {GRAPH_INPUT: x})[0]
    return leaf_probabilities(leaf_values, leaves)


def export_predict_proba(
    directory: str | os.PathLike[str],
    sidecar: dict[str, Any],
    windows: np.ndarray,
    batch_size: int = 128,
) -> np.ndarray:
    """``(B, C)`` probabilities of the export in ``directory`` described by ``sidecar``: the
    HybridViT graph, the forests' mean on the spectral features, or both combined."""
    directory = Path(directory)
    hybrid = None
    if sidecar.get("files", {}).get("onnx"):
        hybrid = onnx_predict_proba(directory / ONNX_FILE, windows, batch_size=batch_size)
    forests = sidecar.get("forests")
    if not forests:
        return hybrid
    features = spectral_features(windows, **_features_arguments(sidecar))
    values = load_file(str(directory / forests["leaf_values"]))
    baseline = np.mean(
        [
            forest_graph_proba(
                directory / name, features, {a: values[f"forest_{k}.{a}"] for a in LEAF_ARRAYS}
            )
            for k, name in enumerate(forests["files"])
        ],
        axis=0,
    )
    if hybrid is None:
        return baseline
    return combine_parts(hybrid, baseline, float(sidecar["hybrid_weight"]))


def _features_arguments(sidecar: dict[str, Any]) -> dict[str, Any]:
    """The sampling rate and stretches of the forests' features, once the sidecar's function
    is known (an export written before stretches: one)."""
    features = sidecar.get("features", {})
    if features.get("function") != FEATURES_FUNCTION:
        raise ValueError(
            f"the export's forests take features of {features.get('function')!r}; expected "
            f"{FEATURES_FUNCTION!r} (an export written by another quake version?)"
        )
    return {
        "sampling_rate_hz": float(features["sampling_rate_hz"]),
        "segments": int(features.get("segments", 1)),
    }


def _onnx_session(path: str | bytes):
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError(
            'running an ONNX export needs onnxruntime; install it with pip install -e ".[dev]"'
        ) from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def verify_export_files(directory: Path, sidecar: dict[str, Any]) -> None:
    """ValueError naming the file when a file of the export is missing or differs from the one
    written (:func:`~quake.deploy.manifest.check_digests`): a graph cut short, replaced or
    edited never runs under the export's model id."""
    recorded = sidecar.get("sha256")
    files = None if recorded is None else {directory / n: d for n, d in recorded.items()}
    check_digests(files, directory / SIDECAR_FILE, sidecar.get("model_id"))


class OnnxClassifier(Classifier):
    """An exported classifier (``quake export``), run with onnxruntime on the CPU."""

    FORMAT = EXPORT_FORMAT

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        sidecar = read_export(self.directory)
        if sidecar.get("files", {}).get("onnx") != ONNX_FILE and not sidecar.get("forests"):
            raise ValueError(
                f"{str(self.directory)!r} holds no {ONNX_FILE} and no forest graphs; expected an "
                "ONNX export (quake export --format onnx)"
            )
        verify_export_files(self.directory, sidecar)
        self.class_names = ClassNames(sidecar["class_names"])
        self.config = PreprocessConfig.from_saved(sidecar["preprocess"])
        self.model_id = sidecar["model_id"]
        self.info = {"export": sidecar}
        self.card = read_card(self.directory)
        self.decision_thresholds = read_decision(self.directory, self.class_names.to_list())

    def predict_proba(self, waveforms: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """``(B, C)`` probabilities of trimmed ``(B, 3, window_samples)`` Z, N, E windows."""
        windows = check_windows(waveforms, self.config.window_samples)
        sidecar = self.info["export"]
        return export_predict_proba(self.directory, sidecar, windows, batch_size=batch_size)

    def save(self, directory: str | os.PathLike) -> Path:
        """A copy of the export folder, built beside ``directory`` and moved into place."""
        directory = Path(directory)
        staging = staging_dir(directory)
        shutil.copytree(self.directory, staging, dirs_exist_ok=True)
        return publish_staged(staging, directory)

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str = "cpu") -> OnnxClassifier:
        """The export in ``folder`` (onnxruntime runs it on the CPU whatever ``device`` says)."""
        return cls(folder)

    def __repr__(self) -> str:
        return (
            f"OnnxClassifier({self.model_id!r}, {self.directory}, classes={list(self.class_names)})"
        )
