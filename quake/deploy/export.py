"""Export a trained classifier to ONNX (and TorchScript) for serving.

Every deployable kind exports: the HybridViT ensemble (``model.onnx``), the fold forests of
the baseline (``forest_<k>.onnx``, the graphs skl2onnx made of them at training time,
:mod:`quake.deploy.forest`) and the combined model (both). The forests take the spectral
features of :func:`quake.models.forest.spectral_features`, which stay in Python beside the
graphs (numpy and scipy: ONNX has no Welch, Hilbert or median of the same rounding, and one
feature crossing a split threshold flips a tree); ``export.json`` names the function, the
sampling rate and the combination weight, and :class:`quake.deploy.onnx.OnnxClassifier` runs
the export. A model trained with catalog context does not export: the context needs catalog
columns that the waveform graphs do not take.

One HybridViT graph per classifier, not one per member: the graph takes what
:meth:`quake.deploy.ensemble.EventClassifier.predict_proba` takes, trimmed Z, N, E windows
``(batch, 3, window_samples)`` float32, and returns what it returns, the mean of the members'
softmax probabilities ``(batch, C)``. The filters (detrend, taper, band-pass: one constant
matrix product, :mod:`quake.data.filters`), ZSCORE and the STFT spectrogram (the saved
:class:`~quake.data.PreprocessConfig`) are inside the graph, so a consumer cannot preprocess
differently from training; the steps before them (DROP_NAN, resampling, TRIMMING) depend on
metadata (rates, picks) and stay with the caller, as in batch classification. The batch axis is
dynamic.

An export folder holds ``model.onnx`` (weights inside the file below 1.5 GB, else beside it in
``model.onnx.data``), ``model.torchscript.pt`` when tracing works, and ``export.json``: class
names, the preprocessing, input and output names and shapes, and the parity measured at export
time (onnxruntime on CPU and the traced module against ``predict_proba``). ``model.onnx`` carries
the class names and the preprocessing itself too, in its ``metadata_props``
(:data:`ONNX_METADATA_KEYS`; :func:`read_onnx_metadata`), so the file alone says what its input
must be and what its outputs are.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save_file
from torch import nn

from quake.data import PreprocessConfig, spectrogram_batch
from quake.data.filters import WaveformFilter
from quake.deploy.card import write_card
from quake.deploy.combined import CombinedClassifier
from quake.deploy.decision import write_decision
from quake.deploy.ensemble import CLASSIFIER_FILE, EventClassifier
from quake.deploy.forest import (
    GRAPH_FILE,
    GRAPH_INPUT,
    GRAPH_LEAVES,
    GRAPH_OUTPUT,
    BaselineClassifier,
)
from quake.deploy.formats import load
from quake.deploy.manifest import file_sha256
from quake.deploy.onnx import (
    EXPORT_FORMAT,
    FEATURES_FUNCTION,
    INPUT_NAME,
    LEAF_ARRAYS,
    LEAF_VALUES_FILE,
    ONNX_FILE,
    OUTPUT_NAME,
    SIDECAR_FILE,
    export_predict_proba,
    onnx_predict_proba,  # noqa: F401  (part of this module's API: callers import it here)
)
from quake.models import HybridViT
from quake.models.hybrid_vit import CONFIG_FILE as HYBRID_VIT_FILE
from quake.options import EXPORT_FORMATS, PARITY_ATOL
from quake.runtime import check_outputs_apart, staging_dir
from quake.version import __version__

logger = logging.getLogger(__name__)

TORCHSCRIPT_FILE = "model.torchscript.pt"
_EXTERNAL_DATA_BYTES = 1_500_000_000  # protobuf caps one file at 2 GB
_PARITY_BATCH_SIZES = (1, 5)  # other sizes than the one traced: the batch axis must be dynamic
#: The kinds that export, and the name ``export.json`` gives each (``kind``).
EXPORTABLE_KINDS = {EventClassifier: "ensemble", CombinedClassifier: "combined",
                    BaselineClassifier: "baseline"}  # fmt: skip
Exportable = EventClassifier | CombinedClassifier | BaselineClassifier


class EnsembleProbabilities(nn.Module):
    """``(B, 3, window_samples)`` trimmed windows -> ``(B, C)`` mean member probabilities.

    :meth:`EventClassifier.predict_proba` as one module: filters, z-score, spectrogram, each
    member, softmax, mean. The members are copied to the CPU, so the classifier is left as it
    was.
    """

    def __init__(self, classifier: EventClassifier):
        super().__init__()
        self.config = classifier.config
        self.members = nn.ModuleList(copy.deepcopy(m).cpu().eval() for m in classifier.models)
        self.register_buffer(
            "stft_window",
            torch.hann_window(self.config.stft_nperseg, periodic=True, dtype=torch.float32),
            persistent=False,
        )
        self.filters = (
            WaveformFilter(self.config, self.config.window_samples)
            if self.config.filters_enabled
            else None
        )

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        spectrograms = spectrogram_batch(
            waveforms, self.config, window=self.stft_window, filters=self.filters
        )
        total = torch.softmax(self.members[0](spectrograms).float(), dim=1)
        for member in self.members[1:]:
            total = total + torch.softmax(member(spectrograms).float(), dim=1)
        return total / len(self.members)


@dataclass
class ExportResult:
    """What :func:`export_classifier` wrote, and the parity it measured."""

    directory: Path
    files: dict[str, Path]
    skipped: dict[str, str] = field(default_factory=dict)  # format -> why it was not written
    parity: dict[str, dict[str, Any]] = field(default_factory=dict)
    sidecar: dict[str, Any] = field(default_factory=dict)


def load_exportable(
    path: str | os.PathLike[str], config: PreprocessConfig | None = None
) -> Exportable:
    """A classifier from a run folder, a model folder (any deployable kind) or one ``HybridViT``
    folder.

    A ``HybridViT`` folder carries no preprocessing: ``config`` (default
    ``PreprocessConfig()``) says which, and must make the spectrograms the model takes. For the
    others ``config`` must be None: the saved preprocessing is the one the model was trained
    with.
    """
    path = Path(path)
    if any((p / CLASSIFIER_FILE).is_file() for p in (path, path / "model")):
        if config is not None:
            raise ValueError(
                f"{str(path)!r} holds a classifier with its own preprocessing; got a "
                "preprocessing config as well, expected none"
            )
        return load(path)
    if (path / HYBRID_VIT_FILE).is_file():
        model = HybridViT.load(path)
        return EventClassifier([model], config or PreprocessConfig())
    raise FileNotFoundError(
        f"nothing to export in {str(path)!r}: expected a run folder (model/{CLASSIFIER_FILE}), a "
        f"model folder ({CLASSIFIER_FILE}) or a HybridViT folder ({HYBRID_VIT_FILE})"
    )


def exported_parts(
    classifier: Exportable,
) -> tuple[EventClassifier | None, BaselineClassifier | None]:
    """The HybridViT ensemble and the forests that an export of ``classifier`` holds (either
    may be None), or a ValueError saying why it cannot be exported."""
    if type(classifier) not in EXPORTABLE_KINDS:
        raise ValueError(
            f"cannot export a {type(classifier).__name__}; expected one of "
            f"{sorted(kind.__name__ for kind in EXPORTABLE_KINDS)}"
        )
    if classifier.context_models:
        raise ValueError(
            f"model {classifier.model_id!r} was trained with catalog context, which needs "
            "catalog columns (origin time, location, magnitude) that the exported waveform "
            "graphs do not take; expected a model trained without it (context.enabled: false)"
        )
    hybrid = getattr(classifier, "hybrid", classifier)
    baseline = getattr(classifier, "baseline", classifier)
    hybrid = hybrid if isinstance(hybrid, EventClassifier) else None
    baseline = baseline if isinstance(baseline, BaselineClassifier) else None
    if baseline is not None and baseline.graphs is None:
        raise ValueError(
            f"model {classifier.model_id!r} holds forests saved without their ONNX graphs "
            "(a folder from before forest export, or whose conversion failed); retrain it "
            "with skl2onnx installed to export it"
        )
    return hybrid, baseline


def describe_parts(classifier: Exportable) -> str:
    """What an export of ``classifier`` holds, in words: ``2 HybridViT member(s) + 2 forest(s)``."""
    hybrid, baseline = exported_parts(classifier)
    parts = [f"{len(hybrid.models)} HybridViT member(s)"] if hybrid is not None else []
    parts += [f"{len(baseline.forests)} forest(s)"] if baseline is not None else []
    return " + ".join(parts)


def parity_windows(config: PreprocessConfig, batch_size: int, seed: int = 0) -> np.ndarray:
    """Test windows for the parity checks: coloured noise of mixed amplitudes, with a P-like
    onset, one flat (dead) channel and one vertical-only item, so every branch of the z-score
    runs."""
    rng = np.random.default_rng(seed)
    n = config.window_samples
    white = rng.normal(size=(batch_size, 3, n)).astype(np.float32)
    x = np.cumsum(white, axis=-1) * 0.05 + white  # some low-frequency content
    x *= rng.uniform(1e-3, 1e4, size=(batch_size, 3, 1)).astype(np.float32)
    onset = n // 5
    x[..., onset:] *= 4.0
    x[0, 1] = 0.0  # a dead horizontal
    if batch_size > 1:
        x[1, 1:] = 0.0  # vertical only
    return np.ascontiguousarray(x, dtype=np.float32)


def export_classifier(
    classifier: Exportable,
    out_dir: str | os.PathLike[str],
    *,
    formats: Sequence[str] = EXPORT_FORMATS,
    opset: int | None = None,
    verify: bool = True,
    atol: float = PARITY_ATOL,
    overwrite: bool = False,
    source: str | None = None,
) -> ExportResult:
    """Write ``out_dir`` with the requested formats and ``export.json``.

    ``verify`` runs each export on CPU (onnxruntime for ONNX, with the spectral features of
    the forests computed beside it) for a few batch sizes and compares with
    ``classifier.predict_proba``; an ONNX export off by more than ``atol`` is an error, a
    TorchScript module off by more is dropped (with its reason in ``skipped``). TorchScript
    holds a HybridViT ensemble only; for a kind with forests it is skipped with that reason.
    The folder is built under a temporary name and moved into place at the end. ``source``
    (the model's path) must not be, contain or sit inside ``out_dir``.
    """
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise ValueError(
            f"unknown export format(s) {unknown or formats!r}; expected some of {EXPORT_FORMATS}"
        )
    if not atol > 0:
        raise ValueError(f"atol must be > 0, got {atol!r}")
    hybrid, baseline = exported_parts(classifier)
    if baseline is not None and "onnx" not in formats:
        raise ValueError(
            f"a {type(classifier).__name__} exports to ONNX only (its forests have no "
            f"TorchScript form); got formats {formats}, expected 'onnx' among them"
        )
    out_dir = Path(out_dir)
    if source is not None:  # --overwrite must never replace the model being exported
        check_outputs_apart({"--out": out_dir}, {"--model": source})
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")

    staging = staging_dir(out_dir)
    result = ExportResult(directory=out_dir, files={})
    opset_used = None
    try:
        reference = _reference(classifier) if verify else None
        if hybrid is not None:
            module = EnsembleProbabilities(hybrid).eval()
            example = torch.from_numpy(parity_windows(classifier.config, 3, seed=1))
        if "onnx" in formats:
            if hybrid is not None:
                opset_used = _export_onnx(
                    module, example, staging / ONNX_FILE, opset, onnx_metadata(hybrid)
                )
                result.files["onnx"] = out_dir / ONNX_FILE
            parts = _parts_entry(classifier, baseline, staging)
            if reference is not None:
                graphs = {
                    "class_names": classifier.class_names.to_list(),
                    "files": {name: path.name for name, path in result.files.items()},
                    **parts,
                }
                parity = _parity(reference, lambda x: export_predict_proba(staging, graphs, x))
                result.parity["onnx"] = {**parity, "runtime": _onnxruntime_name()}
                if parity["max_abs_diff"] > atol:
                    raise RuntimeError(
                        f"ONNX export differs from predict_proba by {parity['max_abs_diff']:.3g} "
                        f"(> atol {atol:g}); the graph is not kept"
                    )
        if "torchscript" in formats and baseline is None:
            _write_torchscript(module, example, staging, out_dir, reference, atol, result)
        elif "torchscript" in formats:
            result.skipped["torchscript"] = (
                "TorchScript holds a HybridViT ensemble only; the ONNX export holds the whole "
                f"{type(classifier).__name__}"
            )
        result.sidecar = _sidecar(classifier, hybrid, parts, result, opset_used, atol, source)
        if classifier.card:  # what the model was trained on travels with the export
            write_card(staging, classifier.card)
        if classifier.decision_thresholds is not None:  # and how it decides
            write_decision(
                staging, classifier.decision_thresholds, classifier.class_names.to_list()
            )
        # checked on loading: a graph cut short or replaced never runs under this model id
        result.sidecar["sha256"] = {
            path.name: file_sha256(path) for path in sorted(staging.iterdir()) if path.is_file()
        }
        (staging / SIDECAR_FILE).write_text(json.dumps(result.sidecar, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported %s to %s: %s", classifier.model_id, out_dir, sorted(result.files))
    return result


def _write_torchscript(module, example, staging, out_dir, reference, atol, result) -> None:
    """Trace ``module`` into the staged folder, kept only when it matches ``reference``."""
    reason = _export_torchscript(module, example, staging / TORCHSCRIPT_FILE)
    if reason is None and reference is not None:
        parity = _parity(
            reference, lambda x: torchscript_predict_proba(staging / TORCHSCRIPT_FILE, x)
        )
        result.parity["torchscript"] = parity
        if parity["max_abs_diff"] > atol:
            reason = f"traced module differs from predict_proba by {parity['max_abs_diff']:.3g}"
            (staging / TORCHSCRIPT_FILE).unlink()
    if reason is None:
        result.files["torchscript"] = out_dir / TORCHSCRIPT_FILE
    else:
        logger.warning("TorchScript not written: %s", reason)
        result.skipped["torchscript"] = reason


def _parts_entry(
    classifier: Exportable, baseline: BaselineClassifier | None, staging: Path
) -> dict[str, Any]:
    """Write the forests' graphs into the staged folder; what ``export.json`` says of them
    (files, classes, the features they take, the combination weight). Empty without forests."""
    if baseline is None:
        return {}
    files = []
    for k, graph in enumerate(baseline.graphs):
        files.append(GRAPH_FILE.format(k=k))
        (staging / files[-1]).write_bytes(graph.model)
    values = {
        f"forest_{k}.{name}": np.ascontiguousarray(forest[name])
        for k, forest in enumerate(baseline.forests)
        for name in LEAF_ARRAYS
    }
    save_file(values, str(staging / LEAF_VALUES_FILE))
    entry: dict[str, Any] = {
        "forests": {
            "files": files,
            "classes": [list(graph.classes) for graph in baseline.graphs],
            "leaf_values": LEAF_VALUES_FILE,
            "input": f"{GRAPH_INPUT}: float32 (batch, features) of features.function",
            "output": (
                f"{GRAPH_LEAVES}: int64 (batch, trees), the leaf each tree reaches; the "
                f"probabilities are the mean of those leaves' class fractions (leaf_values: "
                f"forest_<k>.value[forest_<k>.roots[tree] + leaf], float64), then of the forests. "
                f"{GRAPH_OUTPUT}: the same in float32 for the class indices listed"
            ),
            "model_id": baseline.model_id,
        },
        "features": {
            "function": FEATURES_FUNCTION,
            "sampling_rate_hz": baseline.config.sampling_rate_hz,
            "segments": baseline.segments,
            "meaning": (
                "computed in Python from the same trimmed windows, beside the graphs: each of "
                "the window's `segments` equal stretches, side by side"
            ),
        },
    }
    if isinstance(classifier, CombinedClassifier):
        entry["hybrid_weight"] = classifier.hybrid_weight
    return entry


def onnx_metadata(classifier: EventClassifier) -> dict[str, str]:
    """The ``metadata_props`` an export of ``classifier`` carries (:data:`ONNX_METADATA_KEYS`)."""

    config = classifier.config
    return {
        "class_names": json.dumps(classifier.class_names.to_list()),
        "preprocess": json.dumps(config.to_dict()),
        "model_id": str(classifier.model_id),
        "quake_version": __version__,
        "input": (
            f"{INPUT_NAME}: float32 (batch, 3, {config.window_samples}), trimmed Z, N, E windows "
            f"at {config.sampling_rate_hz:g} Hz; filters, z-score and spectrogram of "
            "'preprocess' are in the graph"
        ),
        "output": (
            f"{OUTPUT_NAME}: float32 (batch, {len(classifier.class_names)}), class probabilities "
            "in 'class_names' order"
        ),
    }


def torchscript_predict_proba(
    path: str | os.PathLike[str], waveforms: np.ndarray, batch_size: int = 128
) -> np.ndarray:
    """Probabilities ``(B, C)`` from an exported TorchScript module on CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)  # TorchScript is deprecated
        module = torch.jit.load(str(path), map_location="cpu")
    x = torch.from_numpy(np.ascontiguousarray(waveforms, dtype=np.float32))
    with torch.inference_mode():
        out = [module(x[start : start + batch_size]) for start in range(0, len(x), batch_size)]
    return torch.cat(out).double().numpy()


# --------------------------------------------------------------------------------- internals
def _reference(classifier: Exportable) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    reference = {}
    for batch_size in _PARITY_BATCH_SIZES:
        x = parity_windows(classifier.config, batch_size, seed=batch_size)
        reference[batch_size] = (x, classifier.predict_proba(x))
    return reference


def _parity(reference, predict) -> dict[str, Any]:
    worst = 0.0
    for x, expected in reference.values():
        got = predict(x)
        if got.shape != expected.shape:
            raise RuntimeError(f"export gives shape {got.shape}; expected {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return {"max_abs_diff": worst, "batch_sizes": sorted(reference)}


def _export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    opset: int | None,
    metadata: dict[str, str],
) -> int:
    try:
        import onnx  # the exporter needs onnx and onnxscript
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            f"ONNX export needs the onnx and onnxscript packages ({exc}); "
            'install them with pip install -e ".[dev]"'
        ) from None
    n_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"waveforms": {0: batch}},
            opset_version=opset,
            verbose=False,
            optimize=True,
        )
    program.save(str(path), external_data=n_bytes > _EXTERNAL_DATA_BYTES)
    # the class names and preprocessing travel in the file itself; external weights stay where
    # the exporter put them (load_external_data=False keeps their references)
    model = onnx.load(str(path), load_external_data=False)
    onnx.helper.set_model_props(
        model, {**{prop.key: prop.value for prop in model.metadata_props}, **metadata}
    )
    onnx.save(model, str(path))
    return int(
        next(o.version for o in program.model_proto.opset_import if o.domain in ("", "ai.onnx"))
    )


def _export_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> str | None:
    """Trace ``module``; None on success, else why not (TorchScript is deprecated upstream)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation and tracer warnings: checked below
            with torch.no_grad():
                traced = torch.jit.trace(module, (example,), check_trace=False)
            traced.save(str(path))
    except Exception as exc:  # tracing fails in many ways (unsupported ops, deprecation)
        return f"tracing failed: {type(exc).__name__}: {exc}"
    return None


def _onnxruntime_name() -> str:
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__} CPUExecutionProvider"


def _sidecar(
    classifier: Exportable,
    hybrid: EventClassifier | None,
    parts: dict[str, Any],
    result: ExportResult,
    opset: int | None,
    atol: float,
    source: str | None,
) -> dict[str, Any]:
    config = classifier.config
    kind = EXPORTABLE_KINDS[type(classifier)]
    in_graph = (
        "the filters (preprocess: detrend, taper_fraction, bandpass_hz, bandpass_order), "
        "ZSCORE and SPECTROGRAM are in the HybridViT graph"
    )
    beside = "the forests' spectral features are computed beside the graphs (features)"
    return {
        "format": EXPORT_FORMAT,
        "kind": kind,
        "quake_version": __version__,
        "torch_version": torch.__version__,
        "model_id": classifier.model_id,
        "source": source,
        "class_names": classifier.class_names.to_list(),
        "preprocess": config.to_dict(),
        "members": len(hybrid.models) if hybrid is not None else 0,
        "combine": _COMBINE[kind],
        **parts,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, config.window_samples],
            "dtype": "float32",
            "meaning": (
                f"trimmed Z, N, E windows at {config.sampling_rate_hz:g} Hz, finite values: "
                "DROP_NAN, resampling and TRIMMING are the caller's (quake.data.window_from_array); "
                + "; ".join(
                    ([in_graph] if hybrid is not None else []) + ([beside] if parts else [])
                )
            ),
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", len(classifier.class_names)],
            "dtype": "float32",
            "meaning": "class probabilities in class_names order (rows sum to 1)",
        },
        "files": {name: path.name for name, path in result.files.items()},
        "skipped": dict(result.skipped),
        "onnx_opset": opset,
        "parity_atol": atol,
        "parity": result.parity,
    }


_COMBINE = {
    "ensemble": "mean of member softmax probabilities, inside the graph",
    "baseline": "mean of the fold forests' probabilities",
    "combined": (
        "quake.deploy.combined.combine_parts: normalised geometric mean of the HybridViT "
        "graph's probabilities (weight hybrid_weight) and the forests' mean (the rest)"
    ),
}
