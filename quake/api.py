"""The Python API: what the ``quake`` command does, for notebooks and scripts.

    >>> import quake
    >>> clf = quake.load(model_dir)                       # a run folder, model folder or export
    >>> result = clf.classify(obspy.read(str(pnw / "waveforms" / "uw61362132" / "*.mseed")),
    ...                       origin_time="2018-04-11T20:55:29.39Z")
    >>> sorted(result.probabilities) == list(clf.class_names)
    True
    >>> table = quake.classify_catalog(obspy.read_events(str(pnw / "catalog.xml")), pnw, model=clf)
    >>> len(table), table.columns[2]
    (48, 'predicted_class')

(``model_dir`` and ``pnw`` stand for a model folder and a catalog + miniSEED folder.)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quake.classify.stream import EventResult, classify_stream


def load(path: str | os.PathLike, device: str = "cpu"):
    """The deployable classifier in ``path``: a run folder (its ``model/``), a model folder
    (``classifier.json``) or an export folder (``export.json`` + ``model.onnx``, run with
    onnxruntime). Each has ``classify(stream)``, ``predict_proba(windows)``, ``class_names``,
    ``config`` and ``model_id``."""
    from quake.classify.run import load_classifier
    from quake.export import SIDECAR_FILE

    path = Path(path)
    if (path / SIDECAR_FILE).is_file():
        return OnnxClassifier(path)
    return load_classifier(path, device=device)


class OnnxClassifier:
    """An exported classifier (``quake export``), run with onnxruntime on the CPU."""

    def __init__(self, directory: str | os.PathLike):
        from quake.classes import ClassNames
        from quake.data import PreprocessConfig
        from quake.export import ONNX_FILE, read_export

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

    def predict_proba(self, waveforms: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """``(B, C)`` probabilities of trimmed ``(B, 3, window_samples)`` Z, N, E windows."""
        from quake.export import ONNX_FILE, onnx_predict_proba

        return onnx_predict_proba(self.directory / ONNX_FILE, waveforms, batch_size=batch_size)

    def classify(self, stream, origin_time=None, picks=None) -> EventResult:
        """As :meth:`quake.inference.EventClassifier.classify`."""
        return classify_stream(self, stream, origin_time, picks)

    def __repr__(self) -> str:
        return (
            f"OnnxClassifier({self.model_id!r}, {self.directory}, classes={list(self.class_names)})"
        )


def classify_catalog(
    catalog: Any,
    waveforms: Any,
    *,
    model: Any,
    quakeml: bool = False,
    **options: Any,
) -> pd.DataFrame | tuple[pd.DataFrame, Any]:
    """Classify every event of ``catalog`` -> the table ``quake classify`` writes as
    ``predictions.csv`` (one row per event, in catalog order).

    ``catalog``: an obspy ``Catalog`` or a QuakeML/CSV path (an in-memory Catalog is not
    changed); ``waveforms``: a path (per-event miniSEED folders, SDS archive, SeisBench set), an
    FDSN URL, or an obspy SDS or FDSN ``Client``; ``model``: a classifier (:func:`load`) or its
    path. ``quakeml=True`` also returns the classified obspy Catalog. ``options`` are those of
    :func:`quake.classify.run.run_classification` (``min_probability``, ``overwrite_types``,
    ``batch_size``, ``workers``, ``device``, ...).
    """
    import obspy

    from quake.classify.run import read_predictions, run_classification

    if isinstance(catalog, obspy.Catalog):
        catalog = catalog.copy()  # annotating it must not change the caller's
    with tempfile.TemporaryDirectory(prefix="quake-classify-") as tmp:
        out = Path(tmp) / "predictions.csv"
        classified = Path(tmp) / "classified.xml" if quakeml else None
        run_classification(
            model,
            catalog,
            waveforms,
            out,
            quakeml=classified,
            **{"progress": False, "workers": 0, **options},
        )
        table = read_predictions(out)
        if not quakeml:
            return table
        return table, obspy.read_events(str(classified), format="QUAKEML")


def train(config: Any = None, *, data: str | os.PathLike | None = None, **overrides: Any) -> Path:
    """Cross-validated training (``quake train``); returns the run folder.

    ``config``: a YAML path, a :class:`quake.training.TrainConfig`, or None for the defaults;
    ``data``: the dataset folder (None: the embedded synthetic set); ``overrides``: dotted keys
    as keyword arguments with ``__`` for the dots, e.g. ``optim__epochs=5``.
    """
    from quake.training import TrainConfig, load_config
    from quake.training import train as train_run
    from quake.training.config import dotted_to_nested, merge

    dotted = {key.replace("__", "."): value for key, value in overrides.items()}
    if data is not None:
        dotted["data.path"] = str(data)
    if isinstance(config, TrainConfig):
        config = TrainConfig.from_dict(merge(config.to_dict(), dotted_to_nested(dotted)))
    else:
        config = load_config(config, dotted)
    return train_run(config).run_dir
