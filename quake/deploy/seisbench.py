"""A trained quake classifier as a SeisBench model, for code written against SeisBench.

The adapter wraps the one classifier protocol (:mod:`quake.deploy.protocol`): ``classify`` and
``forward`` call the classifier's own ``classify`` and ``predict_proba``, nothing is computed
twice.

Needs the ``seisbench`` package (``pip install 'quake-seismic[seisbench]'``)::

    from quake.deploy.seisbench import QuakeClassifier

    model = QuakeClassifier.from_quake("runs/my-run")    # a run, model or ONNX export folder
    out = model.classify(stream, origin_time="2018-04-11T20:55:29.39Z")
    out.probabilities      # {"earthquake": 0.93, "explosion": 0.07}
    out.predicted_class    # "earthquake"

:meth:`QuakeClassifier.classify` takes an obspy Stream of one event, like every SeisBench
model's ``classify``, and returns a ``seisbench.util.ClassifyOutput`` holding what
``quake classify`` gives for that event: ``probabilities`` (event class -> probability, None
when no station was usable), ``predicted_class``, ``stations`` (one row per station, with its
probabilities, quality and any skip reason) and ``skipped``. Windowing, resampling, component
mapping and the quality checks are quake's own, so the numbers are the same as the command's.
``forward`` maps trimmed ``(batch, 3, window_samples)`` Z, N, E windows to ``(batch, classes)``
probabilities. :meth:`QuakeClassifier.annotate` runs the classifier over continuous
recordings and returns its probability Stream (SeisBench's ``annotate`` convention), with the
stride in seconds.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from quake.deploy.formats import load
from quake.deploy.protocol import Classifier

try:
    import seisbench.models as sbm
    import seisbench.util as sbu
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "quake.deploy.seisbench needs the seisbench package; install it with "
        "pip install 'quake-seismic[seisbench]'"
    ) from exc


class QuakeClassifier(sbm.WaveformModel):
    """A quake classifier (``quake.load``'s result) behind SeisBench's ``WaveformModel``.

    ``component_order`` is ``ZNE``, ``sampling_rate`` and ``in_samples`` are the classifier's
    preprocessing (``config.sampling_rate_hz``, ``config.window_samples``) and ``labels`` its
    class names, so SeisBench code that reads them sees the model's real input.
    """

    def __init__(self, classifier: Classifier):
        if not isinstance(classifier, Classifier):
            raise TypeError(
                f"got a {type(classifier).__name__}; expected a quake classifier (quake.load(path))"
            )
        config = classifier.config
        super().__init__(
            component_order="ZNE",
            sampling_rate=float(config.sampling_rate_hz),
            output_type="point",
            in_samples=int(config.window_samples),
            pred_sample=0,
            labels=list(classifier.class_names),
        )
        self.classifier = classifier

    @classmethod
    def from_quake(cls, path: str | os.PathLike, device: str = "cpu") -> QuakeClassifier:
        """The classifier in a run folder, a model folder or an ONNX export folder."""
        return cls(load(path, device=device))

    @property
    def model_id(self) -> str:
        return self.classifier.model_id

    def classify(
        self, stream, origin_time: Any = None, picks: Any = None, **kwargs: Any
    ) -> sbu.ClassifyOutput:
        """One event in an obspy Stream -> ``ClassifyOutput`` with ``probabilities``,
        ``predicted_class``, ``stations``, ``skipped`` and ``model_id``. Windows start
        ``pre_arrival_s`` before each station's P pick (``picks``: ``{"NET.STA.LOC": time}`` or
        obspy Picks), else before ``origin_time``."""
        if kwargs:
            raise TypeError(
                f"unexpected arguments {sorted(kwargs)}; expected origin_time and picks "
                "(quake's windowing and batching are fixed by the model)"
            )
        result = self.classifier.classify(stream, origin_time=origin_time, picks=picks)
        return sbu.ClassifyOutput(
            self.name,
            probabilities=result.probabilities,
            predicted_class=result.predicted_class,
            stations=result.stations,
            skipped=result.skipped,
            model_id=self.model_id,
        )

    def annotate(
        self,
        stream,
        stride: float | None = None,
        *,
        batch_size: int = 128,
        precision: str = "auto",
        copy: bool = True,
        **kwargs: Any,
    ):
        """Continuous recordings in an obspy Stream -> an obspy Stream of class probabilities,
        SeisBench's convention (one trace per station and class, the class in the channel code:
        ``quake_earthquake``): the classifier's own ``annotate``. ``stride`` is in **seconds**
        (default: 8 STFT hops, 5.12 s at 100 Hz), as quake's ``annotate`` takes it, not in
        samples; each sample is stamped at the centre of its window. The input is never
        changed (``copy`` is accepted for SeisBench's signature and has nothing to do)."""
        if kwargs:
            raise TypeError(
                f"unexpected arguments {sorted(kwargs)}; expected stride (seconds), batch_size "
                "and precision (quake's windows are the model's own, their quality rules fixed)"
            )
        return self.classifier.annotate(stream, stride, batch_size=batch_size, precision=precision)

    def forward(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``(batch, 3, window_samples)`` trimmed Z, N, E windows -> ``(batch, classes)``
        probabilities, as ``predict_proba`` gives them."""
        return torch.from_numpy(np.asarray(self.classifier.predict_proba(x)))
