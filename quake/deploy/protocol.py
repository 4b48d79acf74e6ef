"""The one protocol every deployable classifier keeps.

Whatever kind a run deploys (the HybridViT ensemble, the forests, their combination, an ONNX
export), a user gets the same object from ``quake.load(path)``:

- ``predict_proba(windows)``: trimmed ``(batch, 3, window_samples)`` Z, N, E windows ->
  ``(batch, classes)`` probabilities;
- ``classify(stream, origin_time=..., picks=...)``: one event in an obspy Stream -> an
  :class:`~quake.classify.stream.EventResult`, what ``quake classify`` gives for that event;
- ``classify_catalog(catalog, waveforms)``: every event of a catalog -> the predictions table;
- ``class_names``, ``preprocess`` (the :class:`~quake.data.PreprocessConfig` of training),
  ``model_id``, ``info``, ``save(directory)`` and the class method ``load(folder)``.

A kind implements ``predict_proba``, ``save`` and ``load``; windowing, resampling, component
mapping, quality checks, station-to-event combination and catalog context are shared here, as
SeisBench's ``WaveformModel`` shares them across its models. A model trained with catalog
context carries its context models (``context_models``), loaded and saved with it.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from quake.annotate.engine import annotate_stream
from quake.classes import ClassNames
from quake.classify.run import run_classification
from quake.classify.stream import EventResult, classify_stream
from quake.classify.tables import read_predictions
from quake.data import PreprocessConfig
from quake.deploy.card import read_card, write_card
from quake.deploy.decision import read_decision, write_decision
from quake.models.context import ContextModel, load_context_models, save_context_models
from quake.probabilities import decide


def check_windows(waveforms: Any, window_samples: int) -> np.ndarray:
    """``waveforms`` as float32 ``(batch, 3, window_samples)`` windows, refused with a message
    naming the shape or the values when they are not that. The finiteness check runs after the
    cast, so a float64 sample beyond the float32 range is caught here, not inside a model."""
    import obspy

    if isinstance(waveforms, (obspy.Stream, obspy.Trace)):
        raise ValueError(
            "predict_proba takes trimmed (batch, 3, window_samples) windows, got an obspy "
            f"{type(waveforms).__name__}; expected windows, or classify(stream) for a Stream"
        )
    if hasattr(waveforms, "detach"):  # a torch tensor
        waveforms = waveforms.detach().cpu().numpy()
    with np.errstate(over="ignore"):
        windows = np.asarray(waveforms, dtype=np.float32)
    if windows.ndim != 3 or windows.shape[1] != 3 or windows.shape[2] != window_samples:
        raise ValueError(
            f"waveforms have shape {tuple(windows.shape)}; expected (batch, 3, {window_samples}) "
            "trimmed Z, N, E windows (as WaveformDataAdapter.get_waveform gives)"
        )
    if not np.isfinite(windows).all():
        raise ValueError(
            "waveforms hold NaN or inf values (as float32); drop or repair those windows first"
        )
    return windows


class Classifier(ABC):
    """A deployable classifier (module doc). Subclasses set ``FORMAT`` (the ``format`` their
    saved manifest names) and ``class_names``, ``config``, ``model_id``, ``info``."""

    FORMAT: ClassVar[str]

    class_names: ClassNames
    config: PreprocessConfig
    model_id: str
    info: dict
    #: Where the network runs; kinds without one run on the CPU.
    device: torch.device = torch.device("cpu")
    #: The catalog-context fold models (:mod:`quake.models.context`) when trained with them.
    context_models: list[ContextModel] | None = None
    #: What the model was trained on and its cross-validated figures (:mod:`quake.deploy.card`).
    card: dict | None = None
    #: Per-class decision thresholds (:mod:`quake.deploy.decision`); None: the most probable.
    decision_thresholds: np.ndarray | None = None

    #: Whether :meth:`predict_proba` feeds a network the ``spectrogram_batch`` of its windows,
    #: so that a caller who has them already can hand them over (:meth:`predict_proba_with`).
    uses_spectrograms: ClassVar[bool] = False

    @abstractmethod
    def predict_proba(self, waveforms: Any, batch_size: int = 128) -> np.ndarray:
        """``(B, 3, window_samples)`` trimmed Z, N, E windows -> ``(B, C)`` probabilities."""

    def predict_proba_with(
        self, waveforms: Any, spectrograms: torch.Tensor, batch_size: int = 128
    ) -> np.ndarray:
        """:meth:`predict_proba` of windows whose ``spectrogram_batch(waveforms, config)`` is
        ``spectrograms`` already (annotation cuts them from one STFT of the recording,
        :mod:`quake.annotate.spectrogram`). Kinds without a spectrogram network ignore them."""
        del spectrograms
        return self.predict_proba(waveforms, batch_size)

    @abstractmethod
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the model folder: staged beside ``directory``, then moved into place."""

    @classmethod
    @abstractmethod
    def load(cls, folder: str | os.PathLike, device: str = "cpu") -> Classifier:
        """The classifier saved in ``folder`` (its manifest names ``cls.FORMAT``)."""

    # ------------------------------------------------------------------ shared behaviour
    @property
    def preprocess(self) -> PreprocessConfig:
        """The preprocessing of training, applied again to every input."""
        return self.config

    @property
    def window_samples(self) -> int:
        return self.config.window_samples

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(3, window_samples)``: what one item of :meth:`predict_proba` must look like."""
        return (3, self.config.window_samples)

    def to(self, device) -> Classifier:
        """Move the network, if any, to ``device``."""
        return self

    def predict(self, waveforms: Any, batch_size: int = 128) -> list[str]:
        """The class of each window, as the model's decision thresholds decide."""
        probs = self.predict_proba(waveforms, batch_size)
        return self.class_names.decode(decide(probs, self.decision_thresholds))

    def classify(self, stream, origin_time=None, picks=None, event_id=None) -> EventResult:
        """One event held in an obspy Stream (one or more stations) -> its class probabilities,
        each station's probabilities and quality, and what was skipped and why: what
        ``quake classify`` gives for the same event. Windows start ``pre_arrival_s`` before each
        station's P pick (``picks``: ``{"NET.STA.LOC": time}`` or obspy Picks), else before
        ``origin_time``. The event (by ``event_id``, where given) and its windows are held
        against the model card (``result.in_training``, ``result.card_check``; differences are
        logged once, :mod:`quake.classify.card_check`).

            >>> result = clf.classify(stream, origin_time="2018-04-11T20:55:29.39Z")
            >>> result.predicted_class in clf.class_names
            True
        """
        return classify_stream(self, stream, origin_time, picks, event_id=event_id)

    def annotate(
        self,
        stream,
        stride: float | None = None,
        *,
        batch_size: int = 128,
        precision: str = "auto",
    ):
        """Continuous recordings in an obspy Stream (one or more stations) -> an obspy Stream
        of class probabilities, one trace per station and class, SeisBench's convention: the
        class in the channel code (``quake_earthquake``), one sample per ``stride`` seconds
        (default: 8 STFT hops, 5.12 s at 100 Hz), each stamped at the centre of its window.
        Windows the reading layer's quality rules reject (gaps, NaN, clipping, dead channels)
        are NaN and counted in the log; :func:`quake.annotate.annotate_stream` also returns
        each station's skips and flags. ``precision``: ``auto`` (bf16 autocast where the
        device computes bf16 natively, else float32), ``bf16`` or ``fp32``.

            >>> probs = clf.annotate(obspy.read("day.mseed"), stride=2.56)
            >>> probs.select(channel="quake_earthquake").plot()
        """
        return annotate_stream(
            self, stream, stride_s=stride, batch_size=batch_size, precision=precision
        )[0]

    def classify_catalog(
        self, catalog: Any, waveforms: Any, *, quakeml: bool = False, **options: Any
    ) -> pd.DataFrame | tuple[pd.DataFrame, Any]:
        """Classify every event of ``catalog`` -> the table ``quake classify`` writes as
        ``predictions.csv`` (one row per event, in catalog order).

        ``catalog``: an obspy ``Catalog`` (not changed) or a QuakeML/CSV path; ``waveforms``: a
        path (per-event miniSEED folders, SDS archive, SeisBench set), an FDSN URL, or an obspy
        SDS or FDSN ``Client``. ``quakeml=True`` also returns the classified obspy Catalog.
        ``options`` are those of :func:`quake.classify.run.run_classification`. The run's
        summary (:meth:`~quake.classify.tables.ClassifySummary.to_dict`, with its comparison
        with the model card) is in ``table.attrs["summary"]``."""
        import obspy

        if isinstance(catalog, obspy.Catalog):
            catalog = catalog.copy()  # annotating it must not change the caller's
        with tempfile.TemporaryDirectory(prefix="quake-classify-") as tmp:
            out = Path(tmp) / "predictions.csv"
            classified = Path(tmp) / "classified.xml" if quakeml else None
            summary = run_classification(
                self,
                catalog,
                waveforms,
                out,
                quakeml=classified,
                **{"progress": False, "workers": 0, **options},
            )
            table = read_predictions(out)
            table.attrs["summary"] = summary.to_dict()
            if not quakeml:
                return table
            return table, obspy.read_events(str(classified), format="QUAKEML")

    # ------------------------------------------------------------------ saved beside the model
    def load_companions(self, folder: str | os.PathLike) -> None:
        """Take what is saved beside the model in ``folder``: the catalog-context models and
        the model card and the decision thresholds, where there are."""
        self.context_models = load_context_models(folder)
        self.card = read_card(folder)
        self.decision_thresholds = read_decision(folder, self.class_names.to_list())

    def save_companions(self, folder: str | os.PathLike) -> None:
        """Write the catalog-context models, the model card and the decision thresholds, where
        there are, into the staged ``folder``."""
        if self.context_models:
            save_context_models(self.context_models, folder)
        if self.card:
            write_card(folder, self.card)
        if self.decision_thresholds is not None:
            write_decision(folder, self.decision_thresholds, self.class_names.to_list())
