"""An ONNX export (``quake export``) as a deployable classifier, run with onnxruntime.

The export folder holds ``model.onnx`` and ``export.json`` (:mod:`quake.deploy.export` writes
them); this module reads them: the sidecar, the graph's metadata, and probabilities from the
graph. onnxruntime is an optional dependency, imported when a graph runs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from quake.classes import ClassNames
from quake.data import PreprocessConfig
from quake.deploy.protocol import Classifier, check_windows
from quake.runtime import publish_staged, staging_dir

ONNX_FILE = "model.onnx"


SIDECAR_FILE = "export.json"


INPUT_NAME = "waveforms"


OUTPUT_NAME = "probabilities"


EXPORT_FORMAT = "quake.Export"


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


def _onnx_session(path: str):
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError(
            'running an ONNX export needs onnxruntime; install it with pip install -e ".[dev]"'
        ) from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class OnnxClassifier(Classifier):
    """An exported classifier (``quake export``), run with onnxruntime on the CPU."""

    FORMAT = EXPORT_FORMAT

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        sidecar = read_export(self.directory)
        if sidecar.get("files", {}).get("onnx") != ONNX_FILE:
            raise ValueError(
                f"{str(self.directory)!r} holds no {ONNX_FILE}; expected an ONNX export "
                "(quake export --format onnx)"
            )
        self.class_names = ClassNames(sidecar["class_names"])
        self.config = PreprocessConfig.from_dict(sidecar["preprocess"])
        self.model_id = sidecar["model_id"]
        self.info = {"export": sidecar}

    def predict_proba(self, waveforms: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """``(B, C)`` probabilities of trimmed ``(B, 3, window_samples)`` Z, N, E windows."""
        windows = check_windows(waveforms, self.config.window_samples)
        return onnx_predict_proba(self.directory / ONNX_FILE, windows, batch_size=batch_size)

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
