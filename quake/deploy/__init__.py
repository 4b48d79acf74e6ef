"""The deployable classifier: one protocol (:mod:`quake.deploy.protocol`) for every kind a run
can deploy, one :func:`load` backed by one table of saved formats (:mod:`quake.deploy.formats`),
and the export to ONNX (:mod:`quake.deploy.export`).

    >>> from quake.deploy import load
    >>> clf = load("runs/my-run")          # a run, model or ONNX export folder
    >>> clf.classify(stream, origin_time="2018-04-11T20:55:29.39Z").predicted_class
    'earthquake'
"""

from quake.deploy.combined import HYBRID_WEIGHT, CombinedClassifier
from quake.deploy.ensemble import EventClassifier
from quake.deploy.forest import BaselineClassifier
from quake.deploy.formats import KINDS, load
from quake.deploy.onnx import OnnxClassifier
from quake.deploy.protocol import Classifier

__all__ = [
    "HYBRID_WEIGHT",
    "KINDS",
    "BaselineClassifier",
    "Classifier",
    "CombinedClassifier",
    "EventClassifier",
    "OnnxClassifier",
    "load",
]
