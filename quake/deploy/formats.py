"""One table of saved formats and the one :func:`load` behind ``quake.load``.

Every deployable kind saves a manifest that names its ``format`` (``classifier.json`` for a
model folder, ``export.json`` for an ONNX export); :data:`KINDS` maps that name to the class
that loads it, as timm's registry maps a model name to its constructor. A run folder is read
through its ``model/``. A manifest that cannot be read, or that names no known format, is an
error naming the file: a damaged top-level manifest never falls back to one of the parts.
"""

from __future__ import annotations

import os
from pathlib import Path

from quake.deploy.combined import CombinedClassifier
from quake.deploy.ensemble import EventClassifier
from quake.deploy.forest import BaselineClassifier
from quake.deploy.manifest import CLASSIFIER_FILE
from quake.deploy.onnx import SIDECAR_FILE, OnnxClassifier
from quake.deploy.protocol import Classifier
from quake.runtime import read_json, resolve_device

#: ``format`` of a saved manifest -> the kind that loads it.
KINDS: dict[str, type[Classifier]] = {
    kind.FORMAT: kind
    for kind in (EventClassifier, BaselineClassifier, CombinedClassifier, OnnxClassifier)
}


def model_folder(path: str | os.PathLike) -> Path:
    """The folder holding the manifest: ``path`` itself, or a run folder's ``model/``."""
    path = Path(path)
    for folder in (path, path / "model"):
        if (folder / CLASSIFIER_FILE).is_file() or (folder / SIDECAR_FILE).is_file():
            return folder
    raise FileNotFoundError(
        f"no {CLASSIFIER_FILE} or {SIDECAR_FILE} in {str(path)!r} or {str(path / 'model')!r}; "
        "expected a run folder (quake train), a model folder (classifier.json) or an ONNX "
        "export folder (quake export)"
    )


def saved_kind(folder: Path) -> type[Classifier]:
    """The kind whose format the manifest in ``folder`` names."""
    manifest_path = folder / CLASSIFIER_FILE
    if not manifest_path.is_file():
        manifest_path = folder / SIDECAR_FILE
    manifest = read_json(manifest_path, "the manifest of a saved quake model")
    name = manifest.get("format")
    if name not in KINDS:
        raise ValueError(
            f"{str(manifest_path)!r} names format {name!r}; expected one of {sorted(KINDS)}"
        )
    return KINDS[name]


def load(path: str | os.PathLike, device: str = "cpu") -> Classifier:
    """The deployable classifier in ``path``: a run folder (its ``model/``), a model folder or
    an ONNX export folder, whatever kind it deploys; catalog context included where trained
    with it. ``device``: ``cpu``, ``cuda`` or ``auto`` for the parts that run a network."""
    folder = model_folder(path)
    return saved_kind(folder).load(folder, device=resolve_device(device))
