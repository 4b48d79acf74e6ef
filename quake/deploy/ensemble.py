"""The HybridViT ensemble as a deployable classifier: fold models + the exact preprocessing
they were trained with.

A cross-validated run leaves ``<run>/model/``, an :class:`EventClassifier` holding the K fold
models (an ensemble: probabilities averaged over the members) and the
:class:`~quake.data.PreprocessConfig` of training. Batch classification feeds it trimmed windows
(what ``WaveformDataAdapter.get_waveform`` gives); it then applies ``spectrogram_batch`` with the
saved config, so training and classification preprocess identically.

Files: ``classifier.json`` (format, class names, preprocessing, member folders, model id) and
``members/member_<k>/`` (``HybridViT.save``: safetensors + JSON, no pickle).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from quake.classes import ClassNames
from quake.data import PreprocessConfig
from quake.deploy.manifest import (
    CLASSIFIER_FILE,
    check_digests,
    file_sha256,
    read_manifest,
    saved_format,
    write_manifest,
)
from quake.deploy.protocol import Classifier, check_windows
from quake.models import HybridViT
from quake.models.hybrid_vit import WEIGHTS_FILE
from quake.probabilities import model_probabilities
from quake.runtime import resolve_device, staging_dir
from quake.version import __version__

logger = logging.getLogger(__name__)

MEMBERS_DIR = "members"


def verify_weights(folder: Path, manifest: dict) -> None:
    """ValueError naming the file when a member's weights differ from those the classifier was
    saved with (:func:`~quake.deploy.manifest.check_digests`)."""
    recorded = manifest.get("weights_sha256")
    files = None
    if recorded is not None:
        files = {folder / m / WEIGHTS_FILE: recorded.get(m) for m in manifest["members"]}
    check_digests(files, folder / CLASSIFIER_FILE, manifest.get("model_id"), what="weight")


def weights_digest(models: Sequence[torch.nn.Module]) -> str:
    """Short SHA-256 of all member weights: the same weights always give the same id."""
    digest = hashlib.sha256()
    for model in models:
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


#: Where a run keeps its HybridViT ensemble when the forests alone are deployed in ``model/``.
KEPT_DIR = "model_hybridvit"


class EventClassifier(Classifier):
    """One or several HybridViT (averaged) plus the preprocessing they expect.

    Args:
        models: the members; all must share class names and input shape.
        config: the preprocessing used in training (applied again by :meth:`predict_proba`).
        class_names: defaults to the members' class names.
        model_id: short id for provenance; defaults to ``quake-<digest of the weights>``.
        info: free JSON-safe details kept with the model (run name, CV metrics, ...).
    """

    FORMAT = "quake.EventClassifier"

    def __init__(
        self,
        models: Sequence[HybridViT],
        config: PreprocessConfig,
        class_names: ClassNames | Sequence[str] | None = None,
        *,
        model_id: str | None = None,
        info: dict | None = None,
        device: str | torch.device = "cpu",
    ):
        self.models = list(models)
        if not self.models:
            raise ValueError("EventClassifier needs at least one model, got none")
        if class_names is None:
            class_names = self.models[0].class_names
        if class_names is None:
            raise ValueError("class_names are needed: the models carry none")
        self.class_names = ClassNames(class_names)
        self.config = config
        expected = tuple(config.spectrogram_shape[1:])
        for k, model in enumerate(self.models):
            if model.num_classes != len(self.class_names):
                raise ValueError(
                    f"member {k} has {model.num_classes} outputs; expected {len(self.class_names)} "
                    f"for classes {self.class_names.to_list()}"
                )
            if model.class_names is not None and model.class_names != self.class_names:
                raise ValueError(
                    f"member {k} has classes {model.class_names.to_list()}; "
                    f"expected {self.class_names.to_list()}"
                )
            if tuple(model.img_size) != expected:
                raise ValueError(
                    f"member {k} takes {tuple(model.img_size)} spectrograms; the preprocessing "
                    f"makes {expected}"
                )
        self.model_id = model_id or f"quake-{weights_digest(self.models)}"
        self.info = dict(info or {})
        self.device = resolve_device(device)
        for model in self.models:
            model.to(self.device).eval()

    def to(self, device: str | torch.device) -> EventClassifier:
        self.device = resolve_device(device)
        for model in self.models:
            model.to(self.device)
        return self

    uses_spectrograms = True

    def predict_proba(
        self, waveforms: np.ndarray | torch.Tensor, batch_size: int = 128
    ) -> np.ndarray:
        """``(B, 3, window_samples)`` trimmed windows -> ``(B, C)`` probabilities (member mean)."""
        x = torch.from_numpy(check_windows(waveforms, self.window_samples))
        return self._member_mean(x, batch_size, prepared=False)

    def predict_proba_with(
        self, waveforms: np.ndarray | torch.Tensor, spectrograms: torch.Tensor, batch_size=128
    ) -> np.ndarray:
        """The member mean of the given ``spectrograms`` (of ``waveforms``, already computed)."""
        expected = (len(spectrograms), *self.config.spectrogram_shape)
        if tuple(spectrograms.shape) != expected:
            raise ValueError(
                f"spectrograms have shape {tuple(spectrograms.shape)}; expected {expected}"
            )
        return self._member_mean(spectrograms, batch_size, prepared=True)

    def _member_mean(self, x: torch.Tensor, batch_size: int, prepared: bool) -> np.ndarray:
        total = None
        for model in self.models:
            probs = model_probabilities(
                model, x, self.config, batch_size=batch_size, device=self.device, prepared=prepared
            )
            total = probs if total is None else total + probs
        return total / len(self.models)

    # ------------------------------------------------------------------ save / load
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the classifier folder; built under a temporary name, then moved into place."""

        directory = Path(directory)
        staging = staging_dir(directory)
        members = []
        for k, model in enumerate(self.models):
            name = f"{MEMBERS_DIR}/member_{k}"
            model.save(staging / name)
            members.append(name)
        self.save_companions(staging)
        manifest = {
            "format": self.FORMAT,
            "quake_version": __version__,
            "model_id": self.model_id,
            # checked on loading: weights changed after saving never load under this id
            "weights_sha256": {
                name: file_sha256(staging / name / WEIGHTS_FILE) for name in members
            },
            "class_names": self.class_names.to_list(),
            "preprocess": self.config.to_dict(),
            "members": members,
            "combine": "mean of member probabilities",
            "info": self.info,
        }
        write_manifest(staging, manifest, directory)
        logger.info(
            "saved EventClassifier %s (%d members) to %s", self.model_id, len(members), directory
        )
        return directory

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], device: str | torch.device = "cpu"
    ) -> EventClassifier:
        """Load from a run folder (its ``model/``, the HybridViT part of a combined
        ``model/``, ``model/hybridvit/``, or the ensemble kept beside deployed forests,
        :data:`KEPT_DIR`) or from the classifier folder itself."""
        path = Path(path)
        candidates = [
            c
            for c in (
                path,
                path / "model",
                path / "model" / "hybridvit",
                path / "hybridvit",
                path / KEPT_DIR,
            )
            if (c / CLASSIFIER_FILE).is_file()
        ]
        ours = [c for c in candidates if saved_format(c / CLASSIFIER_FILE) == cls.FORMAT]
        if ours or candidates:
            folder = (ours or candidates)[0]
        else:
            raise FileNotFoundError(
                f"no {CLASSIFIER_FILE} in {str(path)!r} or {str(path / 'model')!r}; expected a run "
                "folder written by scripts/train.py or a folder written by EventClassifier.save"
            )
        manifest = read_manifest(folder, cls.FORMAT)
        verify_weights(folder, manifest)
        models = [HybridViT.load(folder / member) for member in manifest["members"]]
        try:
            classifier = cls(
                models,
                PreprocessConfig.from_saved(manifest["preprocess"]),
                manifest["class_names"],
                model_id=manifest["model_id"],
                info=manifest.get("info", {}),
                device=device,
            )
        except ValueError as err:  # members and manifest disagree: name the file
            raise ValueError(f"{str(folder / CLASSIFIER_FILE)!r}: {err}") from None
        classifier.load_companions(folder)
        return classifier

    def __repr__(self) -> str:
        return (
            f"EventClassifier({self.model_id!r}, {len(self.models)} member(s), "
            f"classes={self.class_names.to_list()}, input={self.input_shape})"
        )
