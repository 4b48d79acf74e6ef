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
from pathlib import Path
from typing import Any

import pandas as pd

from quake.deploy import Classifier
from quake.deploy import load as deploy_load
from quake.training import TrainConfig, load_config
from quake.training import train as train_run
from quake.training.config import dotted_to_nested, merge


def load(path: str | os.PathLike, device: str = "cpu") -> Classifier:
    """The deployable classifier in ``path``: a run folder (its ``model/``), a model folder
    (``classifier.json``) or an ONNX export folder (``export.json`` + ``model.onnx``). Every
    kind keeps one protocol (:mod:`quake.deploy.protocol`): ``classify(stream)``,
    ``classify_catalog``, ``predict_proba(windows)``, ``class_names``, ``preprocess``,
    ``model_id``, ``save``."""
    return deploy_load(path, device=device)


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
    ``batch_size``, ``workers``, ...); ``device`` places a model loaded from a path.
    """
    classifier = (
        model if isinstance(model, Classifier) else load(model, options.pop("device", "cpu"))
    )
    return classifier.classify_catalog(catalog, waveforms, quakeml=quakeml, **options)


def train(config: Any = None, *, data: str | os.PathLike | None = None, **overrides: Any) -> Path:
    """Cross-validated training (``quake train``); returns the run folder.

    ``config``: a YAML path, a :class:`quake.training.TrainConfig`, or None for the defaults;
    ``data``: the dataset folder (None: the embedded synthetic set); ``overrides``: dotted keys
    as keyword arguments with ``__`` for the dots, e.g. ``optim__epochs=5``.
    """
    dotted = {key.replace("__", "."): value for key, value in overrides.items()}
    if data is not None:
        dotted["data.path"] = str(data)
    if isinstance(config, TrainConfig):
        config = TrainConfig.from_dict(merge(config.to_dict(), dotted_to_nested(dotted)))
    else:
        config = load_config(config, dotted)
    return train_run(config).run_dir
